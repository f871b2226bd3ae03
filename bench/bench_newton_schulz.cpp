// bench_newton_schulz.cpp: owns the CPU benchmark of newton_schulz (fp32 or bf16, 5 quintic steps) against plain
// matmul in the same dtype.
//
// For each shape m x n it measures, in the same run and on the same threads:
//  - the median wall time of Newton-Schulz on one fp32 m x n matrix, 5 quintic steps, as the Muon step runs it
//    (newton_schulz_matrix with an NsScratch kept from call to call, then copy_ns_result into a kept output),
//    and its GFLOP/s counted with newton_schulz_flops(m, n, 5) = 5 * (4 s^2 l + 2 s^3), s = min(m, n),
//    l = max(m, n) (the count excludes the normalization, transposes and copies, which the time includes);
//  - the same through newton_schulz(G), which allocates its buffers and output afresh on every call. How
//    much that costs depends on the heap's history: when this benchmark timed only the fresh form, 256x1024
//    after the 2048-sided shapes took 9.3 ms (glibc's malloc handing the buffers back to the system and
//    faulting them in again), 7.2 ms with MALLOC_MMAP_THRESHOLD_ and MALLOC_TRIM_THRESHOLD_ set high;
//  - the median wall time of one plain product at::mm_out(C, A, B) with A s x l and B l x s (C s x s, written into
//    a preallocated buffer), counted as 2 s^2 l FLOPs, and its GFLOP/s: the Gram product X X^T that NS itself
//    computes on the small side (for a tall m x n input NS works on its n x m transpose);
//  - the ratio NS GFLOP/s / matmul GFLOP/s: how close Newton-Schulz runs to the BLAS matmul rate of this machine;
//  - the step-path time with ns_symmetric (symmetric products as their upper block triangle, fewer FLOPs than the
//    count above) and its ratio to the full products' time;
//  - side by side, as the Muon step runs its matrices by default (ns_parallel: matrices): T matrices of the shape
//    through run_ns_matrix_parallel, one per intra-op thread (T = at::get_num_threads(); a fresh NsScratch per
//    thread and call, as in the step), against T plain products at::mm_out run side by side in an
//    at::parallel_for, each on its own thread, and the ratio of the two throughputs. At 2 threads the rows above
//    thread every product over both cores; here each product runs on one, as the default step runs it.
// Each measurement is preceded by warmup calls and repeated until both a minimum repeat count and a minimum
// measured time are reached (capped by a maximum repeat count); the median of the repeats is reported.
// NS and matmul are measured alternately in three rounds and the median of the rounds is reported, so a
// transient slowdown of the shared machine hits both sides.
// Measure on an otherwise idle machine: with another process on one of two cores, multi-threaded runs stall at
// every OpenMP barrier and slow down tenfold or more (--threads 1 is then the stable figure).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "optim/muon_batch.h"
#include "optim/newton_schulz.h"

namespace {

struct Shape {
  int64_t m;
  int64_t n;
};

struct Reps {
  int warmup;
  int min_reps;
  int max_reps;
  double min_seconds;
};

// Median seconds of `fn` after `reps.warmup` untimed calls.
double median_seconds(const std::function<void()>& fn, const Reps& reps) {
  for (int i = 0; i < reps.warmup; ++i) fn();
  std::vector<double> times;
  double total = 0;
  while (static_cast<int>(times.size()) < reps.max_reps &&
         (static_cast<int>(times.size()) < reps.min_reps || total < reps.min_seconds)) {
    const auto t0 = std::chrono::steady_clock::now();
    fn();
    const auto t1 = std::chrono::steady_clock::now();
    const double s = std::chrono::duration<double>(t1 - t0).count();
    times.push_back(s);
    total += s;
  }
  std::sort(times.begin(), times.end());
  const size_t k = times.size();
  return k % 2 == 1 ? times[k / 2] : 0.5 * (times[k / 2 - 1] + times[k / 2]);
}

void print_usage(const char* argv0) {
  std::printf(
      "usage: %s [--quick] [--shapes MxN,...] [--threads N] [--dtype float32|bfloat16] [--help]\n"
      "  Times Newton-Schulz (5 quintic steps, CPU; buffers kept as the Muon step keeps them, and fresh\n"
      "  through newton_schulz; with ns_symmetric) and a plain at::mm of an m x n by n x m product\n"
      "  for square and rectangular shapes, and prints median times, GFLOP/s and their ratio.\n"
      "  --quick      fewer shapes and repeats (under ~20 s on 2 cores)\n"
      "  --shapes L   these shapes instead (with --quick's repeats), e.g. 64x64,32x96\n"
      "  --threads N  at::set_num_threads(N) before measuring (default: torch's default)\n"
      "  --dtype D    the NS compute dtype and the matmul's: float32 (default) or bfloat16\n"
      "  --help       this text\n",
      argv0);
}

}  // namespace

int main(int argc, char** argv) {
  bool quick = false;
  std::vector<Shape> given;
  at::ScalarType dtype = at::kFloat;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--quick") == 0) {
      quick = true;
    } else if (std::strcmp(argv[i], "--shapes") == 0 && i + 1 < argc) {
      const std::string list = argv[++i];
      size_t at = 0;
      while (at <= list.size()) {
        const size_t comma = std::min(list.find(',', at), list.size());
        const std::string item = list.substr(at, comma - at);
        long long m = 0, n = 0;
        char tail = 0;
        if (std::sscanf(item.c_str(), "%lldx%lld%c", &m, &n, &tail) != 2 || m < 1 || n < 1) {
          std::fprintf(stderr, "--shapes takes MxN,MxN,... with positive sizes, got '%s' in '%s'\n", item.c_str(),
                       list.c_str());
          return 2;
        }
        given.push_back({m, n});
        at = comma + 1;
      }
      quick = true;
    } else if (std::strcmp(argv[i], "--threads") == 0 && i + 1 < argc) {
      const int threads = std::atoi(argv[++i]);
      if (threads < 1) {
        std::fprintf(stderr, "--threads needs a positive integer, got '%s'\n", argv[i]);
        return 2;
      }
      at::set_num_threads(threads);
    } else if (std::strcmp(argv[i], "--dtype") == 0 && i + 1 < argc) {
      const std::string name = argv[++i];
      dtype = name == "float32" ? at::kFloat : name == "bfloat16" ? at::kBFloat16 : at::ScalarType::Undefined;
      if (dtype == at::ScalarType::Undefined) {
        std::fprintf(stderr, "--dtype takes float32 or bfloat16, got '%s'\n", argv[i]);
        return 2;
      }
    } else if (std::strcmp(argv[i], "--help") == 0 || std::strcmp(argv[i], "-h") == 0) {
      print_usage(argv[0]);
      return 0;
    } else {
      std::fprintf(stderr, "unknown argument '%s'\n", argv[i]);
      print_usage(argv[0]);
      return 2;
    }
  }

  const std::vector<Shape> shapes =
      !given.empty() ? given
      : quick        ? std::vector<Shape>{{256, 256}, {512, 512}, {1024, 1024}, {256, 1024}, {1024, 256}}
                     : std::vector<Shape>{{256, 256},  {512, 512},  {1024, 1024}, {2048, 2048},
                                          {256, 1024}, {512, 2048}, {1024, 2048}, {2048, 512}};
  const Reps reps = quick ? Reps{1, 3, 15, 0.2} : Reps{2, 5, 50, 1.0};
  constexpr int kSteps = 5;

  orthotron::NsOptions options;
  options.schedule = orthotron::ns_schedule_by_name("quintic");
  options.steps = kSteps;
  options.compute_dtype = dtype;

  at::manual_seed(0);
  std::printf("newton_schulz benchmark: CPU, %s, %d quintic steps, torch threads %d%s\n",
              orthotron::ns_dtype_name(dtype).c_str(), kSteps, at::get_num_threads(), quick ? ", --quick" : "");
  std::printf(
      "matmul = at::mm of (s x l) by (l x s), s = min(m,n), l = max(m,n), 2 s^2 l FLOPs; NS FLOPs = "
      "newton_schulz_flops(m, n, %d); medians of 3 alternating rounds\n",
      kSteps);
  const int side = at::get_num_threads();
  std::printf(
      "side by side: %d matrices of the shape, one per thread (ns_parallel: matrices), against %d plain "
      "products likewise\n",
      side, side);
  std::printf("%-11s %12s %10s %14s %12s %10s %9s %10s %9s %12s %12s %11s\n", "shape", "NS ms", "NS GF/s",
              "NS fresh ms", "matmul ms", "mm GF/s", "NS/mm", "sym ms", "sym/NS", "side NS ms", "side mm ms",
              "side NS/mm");

  orthotron::NsOptions symmetric = options;
  symmetric.symmetric = true;
  for (const Shape& s : shapes) {
    const at::Tensor g = at::randn({s.m, s.n});
    const int64_t sm = std::min(s.m, s.n), lg = std::max(s.m, s.n);
    const at::Tensor a = at::randn({sm, lg}).to(dtype);
    const at::Tensor b = at::randn({lg, sm}).to(dtype);
    at::Tensor c = at::empty({sm, sm}, a.options());

    orthotron::NsScratch scratch;
    at::Tensor out = at::empty({s.m, s.n});
    // Side by side: one input, output and product operand set per thread.
    std::vector<orthotron::NsMatrixJob> side_jobs;
    std::vector<at::Tensor> side_a, side_b, side_c;
    for (int t = 0; t < side; ++t) {
      side_jobs.push_back(orthotron::ns_job_into(at::randn({s.m, s.n}), at::empty({s.m, s.n}), &options));
      side_a.push_back(at::randn({sm, lg}).to(dtype));
      side_b.push_back(at::randn({lg, sm}).to(dtype));
      side_c.push_back(at::empty({sm, sm}, a.options()));
    }
    auto side_mm = [&] {
      at::parallel_for(0, side, 1, [&](int64_t begin, int64_t end) {
        for (int64_t t = begin; t < end; ++t) at::mm_out(side_c[t], side_a[t], side_b[t]);
      });
    };
    std::vector<double> ns_rounds, sym_rounds, fresh_rounds, mm_rounds, side_ns_rounds, side_mm_rounds;
    for (int round = 0; round < 3; ++round) {
      ns_rounds.push_back(median_seconds(
          [&] { orthotron::copy_ns_result(out, orthotron::newton_schulz_matrix(g, options, scratch)); }, reps));
      sym_rounds.push_back(median_seconds(
          [&] { orthotron::copy_ns_result(out, orthotron::newton_schulz_matrix(g, symmetric, scratch)); }, reps));
      fresh_rounds.push_back(median_seconds([&] { (void)orthotron::newton_schulz(g, options); }, reps));
      mm_rounds.push_back(median_seconds([&] { at::mm_out(c, a, b); }, reps));
      side_ns_rounds.push_back(median_seconds([&] { orthotron::run_ns_matrix_parallel(side_jobs); }, reps));
      side_mm_rounds.push_back(median_seconds(side_mm, reps));
    }
    for (auto* rounds : {&ns_rounds, &sym_rounds, &fresh_rounds, &mm_rounds, &side_ns_rounds, &side_mm_rounds}) {
      std::sort(rounds->begin(), rounds->end());
    }
    const double ns_s = ns_rounds[1], sym_s = sym_rounds[1], fresh_s = fresh_rounds[1], mm_s = mm_rounds[1];
    const double side_ns_s = side_ns_rounds[1], side_mm_s = side_mm_rounds[1];

    const double ns_gflops = orthotron::newton_schulz_flops(s.m, s.n, kSteps) / ns_s * 1e-9;
    const double mm_gflops =
        2.0 * static_cast<double>(sm) * static_cast<double>(sm) * static_cast<double>(lg) / mm_s * 1e-9;
    const std::string name = std::to_string(s.m) + "x" + std::to_string(s.n);
    // Both sides do `side` times their single-matrix FLOPs, so the throughput ratio is the single one's.
    const double side_ratio =
        (orthotron::newton_schulz_flops(s.m, s.n, kSteps) / side_ns_s) /
        (2.0 * static_cast<double>(sm) * static_cast<double>(sm) * static_cast<double>(lg) / side_mm_s);
    std::printf("%-11s %12.3f %10.1f %14.3f %12.3f %10.1f %9.2f %10.3f %9.2f %12.3f %12.3f %11.2f\n", name.c_str(),
                ns_s * 1e3, ns_gflops, fresh_s * 1e3, mm_s * 1e3, mm_gflops, ns_gflops / mm_gflops, sym_s * 1e3,
                sym_s / ns_s, side_ns_s * 1e3, side_mm_s * 1e3, side_ratio);
    std::fflush(stdout);
  }
  return 0;
}
