// bench_optimizer_step.cpp: optimizer step time on a GPT-shaped parameter set (default 8 layers,
// hidden 512, GQA 8/4 heads, SwiGLU 1536, vocab 8192), measured side by side in one mpirun:
// distributed Muon in the owner-aligned layout (A) and the element-wise layout (B) vs ZeRO-1 AdamW
// vs single-process Muon (rank 0 alone, the others waiting), with the plan's NS imbalance, the bytes
// each rank moves per step, and what `auto` would pick.
//   mpirun -np {1,2,4} build/bin/bench_optimizer_step [--steps N] [--layers L] [--hidden H] [--ns-dtype D]
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include "../tests/support/gpt_fixture.h"
#include "optim/distributed_muon_with_adamw.h"
#include "optim/muon_with_adamw.h"
#include "parallel/mpi_runtime.h"

namespace {

using orthotron::testing::GptShape;

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

void fill_grads(orthotron::NamedParameters& params, int seed) {
  at::manual_seed(static_cast<uint64_t>(seed));
  for (auto& p : params) p.tensor.mutable_grad() = at::randn(p.tensor.sizes()) * 0.01;
}

// Median milliseconds of `steps` timed calls of `step` (after one warm-up), max over ranks.
template <typename Step>
double time_steps(orthotron::Communicator& world, orthotron::NamedParameters& params, int steps, Step&& step) {
  std::vector<double> ms;
  for (int s = -1; s < steps; ++s) {
    fill_grads(params, s + 7);
    world.barrier();
    const auto t0 = std::chrono::steady_clock::now();
    step();
    const double t = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    if (s >= 0) ms.push_back(t);
  }
  at::Tensor m = at::full({1}, median(ms), at::kDouble);
  world.all_reduce(m, orthotron::ReduceOp::kMax);
  return m.item<double>();
}

}  // namespace

int main(int argc, char** argv) {
  return orthotron::run_distributed_main(argc, argv, [](int ac, char** av) {
    GptShape s = orthotron::testing::benchmark_gpt_shape();
    int steps = 3;
    std::string ns_dtype = "float32";
    for (int i = 1; i < ac; ++i) {
      const std::string a = av[i];
      auto next = [&]() { return std::string(i + 1 < ac ? av[++i] : "0"); };
      if (a == "--steps") {
        steps = std::stoi(next());
      } else if (a == "--layers") {
        s.layers = std::stoi(next());
      } else if (a == "--hidden") {
        s.hidden = std::stoi(next());
        s.ffn = 3 * s.hidden;
      } else if (a == "--ns-dtype") {
        ns_dtype = next();
      } else {
        std::printf("usage: mpirun -np N bench_optimizer_step [--steps N] [--layers L] [--hidden H] [--ns-dtype D]\n");
        return a == "--help" ? 0 : 2;
      }
    }
    auto world = orthotron::mpi_world();
    const int w = world->size(), r = world->rank();
    const int threads = std::max(1, static_cast<int>(std::thread::hardware_concurrency()) / w);
    at::set_num_threads(threads);
    auto groups = orthotron::default_groups();
    groups[0].muon.ns.compute_dtype = orthotron::parse_ns_dtype(ns_dtype);
    orthotron::RoutingRule all_adamw;
    all_adamw.name = "everything";
    all_adamw.group = "adamw";
    const auto splits = orthotron::testing::gpt_splits(s);

    auto params = orthotron::testing::gpt_params(s, 1);
    int64_t numel = 0;
    for (const auto& p : params) numel += p.tensor.numel();

    orthotron::DistributedMuonWithAdamW dist(params, *world, groups, orthotron::default_routing_rules(), splits);
    world->stats().reset();
    const double dist_ms = time_steps(*world, params, steps, [&] { dist.step(); });
    const int64_t dist_bytes = (world->stats().bytes_sent() + world->stats().bytes_received()) / (steps + 1);

    orthotron::DistributedMuonWithAdamW dist_b(params, *world, groups, orthotron::default_routing_rules(), splits, {},
                                               "element_wise");
    world->stats().reset();
    const double dist_b_ms = time_steps(*world, params, steps, [&] { dist_b.step(); });
    const int64_t dist_b_bytes = (world->stats().bytes_sent() + world->stats().bytes_received()) / (steps + 1);
    const std::string auto_reason = orthotron::DistributedMuonWithAdamW(
                                        params, *world, groups, orthotron::default_routing_rules(), splits, {}, "auto")
                                        .grid_plan()
                                        .layout_reason;

    orthotron::DistributedMuonWithAdamW zero1(params, *world, {groups[1]}, {all_adamw});  // the AdamW group alone
    world->stats().reset();
    const double zero1_ms = time_steps(*world, params, steps, [&] { zero1.step(); });
    const int64_t zero1_bytes = (world->stats().bytes_sent() + world->stats().bytes_received()) / (steps + 1);

    // Single-process Muon on rank 0 with all the machine's threads; the other ranks wait.
    at::set_num_threads(static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
    double single_ms = 0;
    if (r == 0) {
      auto local = orthotron::testing::gpt_params(s, 1);
      orthotron::MuonWithAdamW single(local, groups, orthotron::default_routing_rules(), splits);
      std::vector<double> ms;
      for (int st = -1; st < steps; ++st) {
        fill_grads(local, st + 7);
        const auto t0 = std::chrono::steady_clock::now();
        single.step();
        if (st >= 0)
          ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
      }
      single_ms = median(ms);
    }
    world->barrier();
    if (r == 0) {
      const auto& plan = dist.plan();
      std::printf("bench_optimizer_step: %d ranks x %d threads, GPT %lld layers hidden %lld (%lld parameters), NS %s\n",
                  w, threads, static_cast<long long>(s.layers), static_cast<long long>(s.hidden),
                  static_cast<long long>(numel), ns_dtype.c_str());
      std::printf("  distributed Muon A %10.1f ms/step  %12lld bytes/rank/step\n", dist_ms,
                  static_cast<long long>(dist_bytes));
      std::printf("  distributed Muon B %10.1f ms/step  %12lld bytes/rank/step\n", dist_b_ms,
                  static_cast<long long>(dist_b_bytes));
      std::printf("  ZeRO-1 AdamW       %10.1f ms/step  %12lld bytes/rank/step\n", zero1_ms,
                  static_cast<long long>(zero1_bytes));
      std::printf("  single-process Muon%10.1f ms/step  (rank 0 alone, %d threads)\n", single_ms,
                  static_cast<int>(std::thread::hardware_concurrency()));
      std::printf(
          "  single/distributed Muon %.2fx; bytes Muon/ZeRO-1 %.4f; NS imbalance max/mean %.3f; padding %.3f%%\n",
          single_ms / dist_ms, zero1_bytes ? static_cast<double>(dist_bytes) / zero1_bytes : 0.0, plan.ns_imbalance(),
          100 * plan.padding_ratio());
      std::printf("  layout B/A time %.2fx, bytes %.4f; %s\n", dist_b_ms / dist_ms,
                  dist_bytes ? static_cast<double>(dist_b_bytes) / dist_bytes : 0.0, auto_reason.c_str());
    }
    return 0;
  });
}
