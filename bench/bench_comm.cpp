// bench_comm.cpp: bus bandwidth of the MPI Communicator's all_reduce, reduce_scatter and all_gather
// from 1 KiB to 256 MiB, nccl-tests style (algbw = bytes / time; busbw = algbw x 2(W-1)/W for
// all_reduce, x (W-1)/W for reduce_scatter and all_gather). Run under mpirun; rank 0 prints.
//   mpirun -np 4 build/bin/bench_comm [--max-bytes N] [--backend mpi|nccl]
#include <ATen/ATen.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "parallel/dist_env.h"
#include "parallel/mpi_runtime.h"
#ifdef ORTHOTRON_WITH_CUDA
#include "parallel/nccl_communicator.h"
#endif

namespace {

constexpr const char* kUsage =
    "usage: mpirun -np N bench_comm [--max-bytes BYTES] [--min-bytes BYTES] [--backend mpi|nccl]\n"
    "Prints median time, algorithm and bus bandwidth per collective and size (float32 payloads).\n";

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  return orthotron::run_distributed_main(argc, argv, [](int ac, char** av) {
    int64_t max_bytes = 256LL << 20, min_bytes = 1LL << 10;
    std::string backend = "mpi";
    for (int i = 1; i < ac; ++i) {
      const std::string a = av[i];
      if (a == "--help") {
        std::fputs(kUsage, stdout);
        return 0;
      } else if (a == "--max-bytes" && i + 1 < ac) {
        max_bytes = std::stoll(av[++i]);
      } else if (a == "--min-bytes" && i + 1 < ac) {
        min_bytes = std::stoll(av[++i]);
      } else if (a == "--backend" && i + 1 < ac) {
        backend = av[++i];
      } else {
        std::fprintf(stderr, "%s", kUsage);
        return 2;
      }
    }
    auto world = orthotron::mpi_world();
    std::unique_ptr<orthotron::Communicator> nccl;
    at::TensorOptions opts = at::TensorOptions().dtype(at::kFloat);
    orthotron::Communicator* comm = world.get();
    if (backend == "nccl") {
#ifdef ORTHOTRON_WITH_CUDA
      nccl = orthotron::NcclCommunicator::create(*world, orthotron::read_dist_env().local_rank, "world");
      comm = nccl.get();
      opts = opts.device(comm->device());
#else
      throw orthotron::InvalidArgument("this build has no NCCL backend");
#endif
    }
    const int w = comm->size();
    if (comm->rank() == 0) {
      std::printf("bench_comm: backend %s, %d ranks, float32, median of timed iterations\n", backend.c_str(), w);
      std::printf("%-15s %12s %10s %12s %12s\n", "op", "bytes", "time_us", "algbw_GB/s", "busbw_GB/s");
    }
    for (const std::string op : {"all_reduce", "reduce_scatter", "all_gather"}) {
      for (int64_t bytes = min_bytes; bytes <= max_bytes; bytes *= 4) {
        const int64_t n = std::max<int64_t>(w, bytes / 4 / w * w);  // divisible by W
        at::Tensor big = at::ones({n}, opts);
        at::Tensor shard = at::ones({n / w}, opts);
        const int iters = static_cast<int>(std::clamp<int64_t>((64LL << 20) / bytes, 3, 50));
        std::vector<double> times;
        for (int it = -2; it < iters; ++it) {
          comm->barrier();
          const auto t0 = std::chrono::steady_clock::now();
          if (op == "all_reduce") {
            comm->all_reduce(big, orthotron::ReduceOp::kSum);
          } else if (op == "reduce_scatter") {
            comm->reduce_scatter(shard, big, orthotron::ReduceOp::kSum);
          } else {
            comm->all_gather(big, shard);
          }
          const double us = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count();
          if (it >= 0) times.push_back(us);
        }
        // The slowest rank defines the collective's time.
        at::Tensor t = at::full({1}, median(times), at::kDouble);
        world->all_reduce(t, orthotron::ReduceOp::kMax);
        const double us = t.item<double>();
        const double algbw = static_cast<double>(n * 4) / us / 1e3;
        const double factor = op == "all_reduce" ? 2.0 * (w - 1) / w : static_cast<double>(w - 1) / w;
        if (comm->rank() == 0) {
          std::printf("%-15s %12lld %10.1f %12.3f %12.3f\n", op.c_str(), static_cast<long long>(n * 4), us, algbw,
                      algbw * factor);
        }
      }
    }
    return 0;
  });
}
