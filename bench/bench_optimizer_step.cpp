// bench_optimizer_step.cpp: optimizer step time on a GPT-shaped parameter set (default 8 layers,
// hidden 512, GQA 8/4 heads, SwiGLU 1536, vocab 8192), measured side by side in one mpirun:
// distributed Muon in the owner-aligned layout (A) and the element-wise layout (B) vs ZeRO-1 AdamW
// vs single-process Muon (rank 0 alone: the others sleep in a barrier polled every 10 ms, so they
// take no CPU from it; once with one rank's share of the threads, once with all of them), with the plan's NS imbalance,
// the bytes each rank moves per step, and what `auto` would pick. Layouts A and B and ZeRO-1 each run twice, in
// alternating rounds: in one bucket and in overlapped buckets of --bucket-mb (set_bucket_bytes; two optimizers, since
// layout B's cut follows its buckets); each prints where its time went (packing, waiting for the reduce-scatter, norm,
// update with layout B's all-to-alls, waiting for the all-gather, unpacking) beside the same collectives timed alone.
//   mpirun -np {1,2,4} build/bin/bench_optimizer_step [--steps N] [--layers L] [--hidden H] [--ns-dtype D]
//                                                    [--bucket-mb MB] [--rounds R]
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <numeric>
#include <string>
#include <thread>
#include <tuple>
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

using StepTimes = orthotron::DistributedMuonWithAdamW::StepTimes;

// Two distributed optimizers over the same parameters, `one` in one bucket and `bucketed` in buckets
// of `bucket_bytes` (set before their first step: layout B's cut follows its buckets), alternating
// over `rounds` rounds of `steps` timed steps each (after one warm-up of each): per setting, the
// median step time (max over ranks) and the median of each part on this rank. Each setting first
// sets its bucket size again (the same value: the plan stays), which under layout B makes the
// parameters alias that optimizer's buffer, as they would in a run with one optimizer.
std::pair<StepTimes, StepTimes> time_one_and_bucketed(orthotron::Communicator& world,
                                                      orthotron::NamedParameters& params, int steps, int rounds,
                                                      orthotron::DistributedMuonWithAdamW& one,
                                                      orthotron::DistributedMuonWithAdamW& bucketed,
                                                      int64_t bucket_bytes) {
  std::vector<StepTimes> parts[2];
  std::vector<double> totals[2];
  int64_t buckets[2] = {one.buckets(), bucketed.buckets()};
  for (int round = -1; round < rounds; ++round) {  // round -1: warm-up
    for (int setting = 0; setting < 2; ++setting) {
      orthotron::DistributedMuonWithAdamW& opt = setting == 0 ? one : bucketed;
      opt.set_bucket_bytes(setting == 0 ? 0 : bucket_bytes);
      for (int s = 0; s < (round < 0 ? 1 : steps); ++s) {
        fill_grads(params, 7 + s);
        world.barrier();
        const auto t0 = std::chrono::steady_clock::now();
        opt.step();
        if (round < 0) continue;
        totals[setting].push_back(
            std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
        parts[setting].push_back(opt.last_step_times());
      }
    }
  }
  StepTimes out[2];
  for (int setting = 0; setting < 2; ++setting) {
    auto med = [&](double StepTimes::*field) {
      std::vector<double> v;
      for (const auto& p : parts[setting]) v.push_back(p.*field);
      return median(v);
    };
    at::Tensor m = at::full({1}, median(totals[setting]), at::kDouble);
    world.all_reduce(m, orthotron::ReduceOp::kMax);
    out[setting].total_ms = m.item<double>();
    out[setting].buckets = buckets[setting];
    out[setting].pack_ms = med(&StepTimes::pack_ms);
    out[setting].reduce_wait_ms = med(&StepTimes::reduce_wait_ms);
    out[setting].norm_ms = med(&StepTimes::norm_ms);
    out[setting].update_ms = med(&StepTimes::update_ms);
    out[setting].gather_wait_ms = med(&StepTimes::gather_wait_ms);
    out[setting].unpack_ms = med(&StepTimes::unpack_ms);
    out[setting].exchange_wait_ms = med(&StepTimes::exchange_wait_ms);
  }
  return {out[0], out[1]};
}

void print_parts(const char* what, const StepTimes& t) {
  std::printf(
      "  %-22s %8.1f ms/step: pack %.1f, reduce-scatter wait %.1f, norm %.1f, update %.1f, all-to-all wait %.1f, "
      "all-gather wait %.1f, unpack %.1f (rank 0, %lld buckets)\n",
      what, t.total_ms, t.pack_ms, t.reduce_wait_ms, t.norm_ms, t.update_ms, t.exchange_wait_ms, t.gather_wait_ms,
      t.unpack_ms, static_cast<long long>(t.buckets));
}

// Median milliseconds of `steps` timed calls of the blocking `collectives` (after one warm-up), max over ranks.
template <typename Collectives>
double time_collectives(orthotron::Communicator& world, int steps, Collectives&& collectives) {
  std::vector<double> ms;
  for (int st = -1; st < steps; ++st) {
    world.barrier();
    const auto t0 = std::chrono::steady_clock::now();
    collectives();
    if (st >= 0) ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  at::Tensor m = at::full({1}, median(ms), at::kDouble);
  world.all_reduce(m, orthotron::ReduceOp::kMax);
  return m.item<double>();
}

// The exposed step against the sum of its parts: the collectives timed alone plus the compute parts
// of the one-bucket step (packing, norm, update, unpacking; no waits).
void print_against_sum(const char* what, double comm_ms, const StepTimes& one, const StepTimes& bucketed,
                       double bucket_mb) {
  const double compute = one.pack_ms + one.norm_ms + one.update_ms + one.unpack_ms;
  std::printf(
      "  %s: collectives alone (blocking) %.1f ms + compute parts %.1f ms = %.1f ms; exposed step: one bucket "
      "%.1f ms (%.2f of the sum), %.0f MB buckets %.1f ms (%.2f)\n",
      what, comm_ms, compute, comm_ms + compute, one.total_ms, one.total_ms / (comm_ms + compute), bucket_mb,
      bucketed.total_ms, bucketed.total_ms / (comm_ms + compute));
}

// A barrier that takes no CPU while it waits: polled every 10 ms.
void sleeping_barrier(orthotron::Communicator& world) {
  orthotron::WorkPtr b = world.ibarrier();
  while (!b->test()) std::this_thread::sleep_for(std::chrono::milliseconds(10));
}

}  // namespace

int main(int argc, char** argv) {
  return orthotron::run_distributed_main(argc, argv, [](int ac, char** av) {
    GptShape s = orthotron::testing::benchmark_gpt_shape();
    int steps = 3;
    std::string ns_dtype = "float32";
    double bucket_mb = 16;
    int rounds = 3;
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
      } else if (a == "--rounds") {
        rounds = std::stoi(next());
      } else if (a == "--bucket-mb") {
        bucket_mb = std::stod(next());
      } else {
        std::printf(
            "usage: mpirun -np N bench_optimizer_step [--steps N] [--layers L] [--hidden H] [--ns-dtype D] "
            "[--bucket-mb MB]\n");
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
    const int64_t bucket_bytes = static_cast<int64_t>(bucket_mb * (1 << 20));
    time_steps(*world, params, 1, [&] { dist.step(); });  // counts the bytes of two steps
    const int64_t dist_bytes = (world->stats().bytes_sent() + world->stats().bytes_received()) / 2;
    // Another optimizer of the same layout, in buckets of bucket_bytes (before its first step).
    auto bucketed_twin = [&](const std::vector<orthotron::ParamGroup>& g,
                             const std::vector<orthotron::RoutingRule>& rules, const orthotron::SplitRegistry& split,
                             const std::string& layout) {
      auto opt = std::make_unique<orthotron::DistributedMuonWithAdamW>(params, *world, g, rules, split,
                                                                       orthotron::TensorParallelContext{}, layout);
      opt->set_bucket_bytes(bucket_bytes);
      return opt;
    };
    StepTimes one_bucket, bucketed;
    {
      auto twin = bucketed_twin(groups, orthotron::default_routing_rules(), splits, "owner_aligned");
      std::tie(one_bucket, bucketed) = time_one_and_bucketed(*world, params, steps, rounds, dist, *twin, bucket_bytes);
    }
    const double dist_ms = bucketed.total_ms;

    // The step's collectives alone, blocking: one reduce-scatter and one all-gather of W x S.
    double comm_ms = 0;
    {
      const int64_t S = dist.plan().shard_len;
      at::Tensor buffer = at::randn({S * w}), shard = at::empty({S});
      comm_ms = time_collectives(*world, steps, [&] {
        world->reduce_scatter(shard, buffer, orthotron::ReduceOp::kAvg);
        world->all_gather(buffer, shard);
      });
    }

    orthotron::DistributedMuonWithAdamW dist_b(params, *world, groups, orthotron::default_routing_rules(), splits, {},
                                               "element_wise");
    world->stats().reset();
    time_steps(*world, params, 1, [&] { dist_b.step(); });  // counts the bytes of two steps
    const int64_t dist_b_bytes = (world->stats().bytes_sent() + world->stats().bytes_received()) / 2;
    StepTimes b_one, b_bucketed;
    {
      auto twin = bucketed_twin(groups, orthotron::default_routing_rules(), splits, "element_wise");
      std::tie(b_one, b_bucketed) = time_one_and_bucketed(*world, params, steps, rounds, dist_b, *twin, bucket_bytes);
    }
    const double dist_b_ms = b_bucketed.total_ms;
    // Layout B's collectives alone, blocking: the reduce-scatter and all-gather of its W x S and the
    // gather-to-owner and scatter-back all-to-alls with the plan's counts.
    double comm_b_ms = 0;
    {
      const auto& pb = dist_b.plan();
      std::vector<int64_t> to(static_cast<size_t>(w), 0), from(static_cast<size_t>(w), 0);
      for (const auto& seg : pb.segments) {
        const int owner = pb.owner[seg.param];
        if (owner < 0 || owner == seg.rank) continue;
        if (seg.rank == r) to[static_cast<size_t>(owner)] += seg.count;
        if (owner == r) from[static_cast<size_t>(seg.rank)] += seg.count;
      }
      at::Tensor buffer = at::randn({pb.shard_len * w}), shard = at::empty({pb.shard_len});
      at::Tensor pieces = at::randn({std::accumulate(to.begin(), to.end(), int64_t{0})});
      at::Tensor gathered = at::empty({std::accumulate(from.begin(), from.end(), int64_t{0})});
      comm_b_ms = time_collectives(*world, steps, [&] {
        world->reduce_scatter(shard, buffer, orthotron::ReduceOp::kAvg);
        world->all_to_all(gathered, pieces, to, from);
        world->all_to_all(pieces, gathered, from, to);
        world->all_gather(buffer, shard);
      });
    }
    const std::string auto_reason = orthotron::DistributedMuonWithAdamW(
                                        params, *world, groups, orthotron::default_routing_rules(), splits, {}, "auto")
                                        .grid_plan()
                                        .layout_reason;

    orthotron::DistributedMuonWithAdamW zero1(params, *world, {groups[1]}, {all_adamw});  // the AdamW group alone
    world->stats().reset();
    time_steps(*world, params, 1, [&] { zero1.step(); });
    const int64_t zero1_bytes = (world->stats().bytes_sent() + world->stats().bytes_received()) / 2;
    StepTimes zero1_one, zero1_bucketed;
    {
      auto twin = bucketed_twin({groups[1]}, {all_adamw}, orthotron::SplitRegistry{}, "owner_aligned");
      std::tie(zero1_one, zero1_bucketed) =
          time_one_and_bucketed(*world, params, steps, rounds, zero1, *twin, bucket_bytes);
    }
    const double zero1_ms = zero1_bucketed.total_ms;

    // Single-process Muon on rank 0, the other ranks asleep in the barrier: with one rank's share of
    // the machine's threads (what each distributed rank has: the ideal speedup is W, or the cores over
    // one rank's threads where the ranks oversubscribe the machine) and with all of
    // them (one process using the whole machine: the ideal is 1 on one machine).
    auto time_single = [&](int single_threads) {
      at::set_num_threads(single_threads);
      double ms_step = 0;
      if (r == 0) {
        auto local = orthotron::testing::gpt_params(s, 1);
        orthotron::MuonWithAdamW single(local, groups, orthotron::default_routing_rules(), splits);
        std::vector<double> ms;
        for (int st = -1; st < steps; ++st) {
          fill_grads(local, st + 7);
          const auto t0 = std::chrono::steady_clock::now();
          single.step();
          if (st >= 0) {
            ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
          }
        }
        ms_step = median(ms);
      }
      sleeping_barrier(*world);
      return ms_step;
    };
    const int all_threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    const double share_ms = time_single(threads);
    const double single_ms = time_single(all_threads);
    if (r == 0) {
      const auto& plan = dist.plan();
      std::printf("bench_optimizer_step: %d ranks x %d threads, GPT %lld layers hidden %lld (%lld parameters), NS %s\n",
                  w, threads, static_cast<long long>(s.layers), static_cast<long long>(s.hidden),
                  static_cast<long long>(numel), ns_dtype.c_str());
      std::printf("  distributed Muon A %10.1f ms/step  %12lld bytes/rank/step\n", dist_ms,
                  static_cast<long long>(dist_bytes));
      print_parts("A in one bucket", one_bucket);
      print_parts("A in buckets", bucketed);
      print_against_sum("A (reduce-scatter + all-gather)", comm_ms, one_bucket, bucketed, bucket_mb);
      std::printf("  distributed Muon B %10.1f ms/step  %12lld bytes/rank/step\n", dist_b_ms,
                  static_cast<long long>(dist_b_bytes));
      print_parts("B in one bucket", b_one);
      print_parts("B in buckets", b_bucketed);
      print_against_sum("B (reduce-scatter, two all-to-alls, all-gather)", comm_b_ms, b_one, b_bucketed, bucket_mb);
      std::printf("  ZeRO-1 AdamW       %10.1f ms/step  %12lld bytes/rank/step\n", zero1_ms,
                  static_cast<long long>(zero1_bytes));
      print_parts("ZeRO-1 in one bucket", zero1_one);
      print_parts("ZeRO-1 in buckets", zero1_bucketed);
      print_against_sum("ZeRO-1 (reduce-scatter + all-gather)", comm_ms, zero1_one, zero1_bucketed, bucket_mb);
      std::printf(
          "  single-process Muon%10.1f ms/step  (rank 0 alone, the others asleep, %d thread(s): one rank's share)\n",
          share_ms, threads);
      std::printf("  single-process Muon%10.1f ms/step  (rank 0 alone, the others asleep, %d thread(s): the machine)\n",
                  single_ms, all_threads);
      std::printf(
          "  distributed Muon against one process with one rank's share (%d thread(s); ideal %dx): A in buckets "
          "%.2fx, B in buckets %.2fx; against one process with the machine (%d threads; ideal 1x on one machine): "
          "A %.2fx, B %.2fx\n",
          threads, std::min(w, all_threads / threads), share_ms / dist_ms, share_ms / dist_b_ms, all_threads,
          single_ms / dist_ms, single_ms / dist_b_ms);
      std::printf("  bytes Muon/ZeRO-1 %.4f; NS imbalance max/mean %.3f; padding %.3f%%\n",
                  zero1_bytes ? static_cast<double>(dist_bytes) / zero1_bytes : 0.0, plan.ns_imbalance(),
                  100 * plan.padding_ratio());
      std::printf("  layout B/A time %.2fx, bytes %.4f; %s\n", dist_b_ms / dist_ms,
                  dist_bytes ? static_cast<double>(dist_b_bytes) / dist_bytes : 0.0, auto_reason.c_str());
    }
    return 0;
  });
}
