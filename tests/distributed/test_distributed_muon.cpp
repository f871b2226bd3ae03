// test_distributed_muon.cpp: DistributedMuonWithAdamW on real ranks (CTest runs it with 1, 2, 3
// and 4): bitwise equal to the single-process container over 20 steps on a GPT-shaped set with
// fused QKV (GQA) and gate/up splits; edge shapes and ranks that own nothing; parameters without a
// gradient; the plan-hash check; the byte bound against ZeRO-1 AdamW; per-rank state size; and the
// three-models save/load test with its error paths.
#include <ATen/Parallel.h>
#include <c10/core/GradMode.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <numeric>
#include <set>

#include "base/errors.h"
#include "engine/optimizer_state_files.h"
#include "engine/train/gradient_ready_hooks.h"
#include "gpt_fixture.h"
#include "mpi_world.h"
#include "optim/distributed_muon_with_adamw.h"
#include "optim/element_plan.h"
#include "optim/muon_with_adamw.h"
#include "optim/owner_plan.h"
#include "parallel/mpi_runtime.h"
#include "test_util.h"

namespace orthotron {
namespace {

using orthotron::testing::GptShape;

using orthotron::testing::world;

using orthotron::testing::clone_params;

// Gradients whose sums are exact in fp32 in any order (multiples of 2^-10 in [-4, 4)), so the
// reduce-scatter's summation order cannot change a bit: the distributed average then equals the
// single-process (sum / W) exactly, and the test can demand bitwise equality.
at::Tensor exact_grad(at::IntArrayRef shape, uint64_t seed) {
  at::manual_seed(seed);
  return at::randint(-4096, 4096, shape, at::kLong).to(at::kFloat) / 1024.0;
}

// Which ranks give parameter `i` a gradient at `step`: everyone, except that parameter 2 has none
// anywhere at step 3 and parameter 4 only on rank 0 at step 5.
bool has_grad(size_t i, int step, int rank) {
  if (i == 2 && step == 3) return false;
  if (i == 4 && step == 5) return rank == 0;
  return true;
}

// Sets this rank's gradients on `dist` and the averaged gradients on `ref`.
void set_grads(NamedParameters& dist, NamedParameters& ref, int step) {
  const int w = world().size(), r = world().rank();
  for (size_t i = 0; i < dist.size(); ++i) {
    at::Tensor sum = at::zeros(dist[i].tensor.sizes());
    bool any = false;
    for (int q = 0; q < w; ++q) {
      if (!has_grad(i, step, q)) continue;
      const at::Tensor g = exact_grad(dist[i].tensor.sizes(), 1000003ULL * step + 1009ULL * q + i);
      sum += g;
      any = true;
      if (q == r) dist[i].tensor.mutable_grad() = g;
    }
    if (!has_grad(i, step, r)) dist[i].tensor.mutable_grad() = at::Tensor();
    ref[i].tensor.mutable_grad() = any ? sum / static_cast<double>(w) : at::Tensor();
  }
}

std::vector<ParamGroup> test_groups() {
  auto g = default_groups();
  g[0].muon.lr = 0.03;
  g[0].muon.weight_decay = 0.1;
  g[0].muon.scale_mode = ScaleMode::kMatchRmsAdamW;
  g[1].adamw.lr = 0.01;
  g[1].adamw.beta2 = 0.95;
  g[1].adamw.weight_decay = 0.05;
  return g;
}

void expect_bitwise(const NamedParameters& a, const NamedParameters& b, const std::string& what) {
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_TRUE(at::equal(a[i].tensor, b[i].tensor))
        << what << ": " << a[i].name << " differs on rank " << world().rank() << ", max abs diff "
        << (a[i].tensor - b[i].tensor).abs().max().item<double>();
  }
}

// Every rank holds the same bits: compare each parameter with rank 0's copy.
void expect_ranks_agree(const NamedParameters& params) {
  for (const auto& p : params) {
    at::Tensor mine = p.tensor.detach().clone();
    at::Tensor root = mine.clone();
    world().broadcast(root, 0);
    EXPECT_TRUE(at::equal(mine, root)) << p.name << " on rank " << world().rank() << " differs from rank 0";
  }
}

// Edge shapes: a row, a column, a matrix whose 221 elements do not divide the world size, a bias,
// a 3-D stack; 268 elements in all.
NamedParameters edge_params() {
  at::manual_seed(5);
  return {{"a.weight", at::randn({1, 7}).requires_grad_(true)},
          {"b.weight", at::randn({7, 1}).requires_grad_(true)},
          {"c.weight", at::randn({13, 17}).requires_grad_(true)},
          {"d.bias", at::randn({3}).requires_grad_(true)},
          {"e.weight", at::randn({2, 3, 5}).requires_grad_(true)}};
}

TEST(DistributedMuon, EqualsSingleProcessBitwiseOver20Steps) {
  const GptShape s;
  const NamedParameters init = orthotron::testing::gpt_params(s, 11);
  NamedParameters dist = clone_params(init), ref = clone_params(init);
  DistributedMuonWithAdamW dopt(dist, world(), test_groups(), default_routing_rules(),
                                orthotron::testing::gpt_splits(s));
  MuonWithAdamW sopt(ref, test_groups(), default_routing_rules(), orthotron::testing::gpt_splits(s));
  for (int step = 0; step < 20; ++step) {
    set_grads(dist, ref, step);
    dopt.step();
    sopt.step();
  }
  expect_bitwise(dist, ref, "distributed vs single-process after 20 steps");
  expect_ranks_agree(dist);
  EXPECT_EQ(dopt.step_count(dist[2].name), 19) << "a parameter with no gradient anywhere is skipped";
  EXPECT_EQ(dopt.step_count(dist[4].name), 20) << "a gradient on one rank is a step for everyone";
  if (world().rank() == 0) std::printf("W=%d %s\n", world().size(), dopt.plan().summary().c_str());
}

// Layout B (element-wise shards): the same bitwise equality, on the GPT-shaped set and on edge
// shapes that do not divide the world size, with matrices straddling shards (their gradient pieces
// travel to the owner and the result back, counted by the communicator against the plan).
TEST(DistributedMuon, ElementWiseLayoutEqualsSingleProcessBitwise) {
  const GptShape s;
  const NamedParameters edge = edge_params();
  for (const bool gpt : {true, false}) {
    const NamedParameters init = gpt ? orthotron::testing::gpt_params(s, 11) : edge;
    const SplitRegistry splits = gpt ? orthotron::testing::gpt_splits(s) : SplitRegistry{};
    NamedParameters dist = clone_params(init), ref = clone_params(init), bucketed = clone_params(init);
    DistributedMuonWithAdamW dopt(dist, world(), test_groups(), default_routing_rules(), splits, {}, "element_wise");
    MuonWithAdamW sopt(ref, test_groups(), default_routing_rules(), splits);
    // The reduce-scatter and all-gather in buckets around the all-to-alls: the same bits.
    DistributedMuonWithAdamW bopt(bucketed, world(), test_groups(), default_routing_rules(), splits, {},
                                  "element_wise");
    bopt.set_bucket_bytes(4 * world().size() * (gpt ? 1007 : 4));
    ASSERT_GT(bopt.buckets(), 2);
    ASSERT_EQ(dopt.plan().layout, ShardLayout::kElementWise);
    const OwnerPlan& plan = dopt.plan();
    int64_t straddling = 0;
    for (size_t i = 0; i < init.size(); ++i) {
      if (plan.owner[i] < 0) continue;
      int64_t outside = 0;
      for (const auto& seg : plan.segments) outside += seg.param == i && seg.rank != plan.owner[i] ? seg.count : 0;
      straddling += outside > 0;
    }
    if (world().size() > 1 && !gpt) {  // c.weight (221 elements from offset 14) crosses a shard boundary
      EXPECT_GT(straddling, 0) << "no Muon matrix leaves its owner's shard: nothing tested";
    }
    const std::string what = std::string(gpt ? "GPT" : "edge shapes") + " under layout B";
    for (int step = 0; step < 12; ++step) {
      set_grads(dist, ref, step);
      for (size_t i = 0; i < dist.size(); ++i) {
        bucketed[i].tensor.mutable_grad() =
            dist[i].tensor.grad().defined() ? dist[i].tensor.grad().clone() : at::Tensor();
      }
      // The all-to-alls move what the plan says: twice (sent + received), fp32; in buckets, two per bucket.
      auto expect_all_to_alls = [&](const OwnerPlan& p, int64_t calls, const std::string& how) {
        const auto& by_op = world().stats().by_op;
        const bool any = by_op.count("all_to_all") > 0;
        const int64_t counted = any ? by_op.at("all_to_all").bytes_sent + by_op.at("all_to_all").bytes_received : 0;
        const auto r = static_cast<size_t>(world().rank());
        EXPECT_EQ(counted, 4 * 2 * (p.gather_sent[r] + p.gather_received[r])) << how;
        EXPECT_EQ(any ? by_op.at("all_to_all").calls : 0, calls) << how;
      };
      world().stats().reset();
      bopt.step();
      if (step == 0) expect_all_to_alls(bopt.plan(), 2 * bopt.buckets(), what + " in buckets");
      world().stats().reset();
      dopt.step();
      sopt.step();
      if (step == 0) expect_all_to_alls(plan, 2, what);
    }
    expect_bitwise(dist, ref, what + ", 12 steps");
    expect_bitwise(bucketed, ref, what + " in " + std::to_string(bopt.buckets()) + " buckets, 12 steps");
    expect_ranks_agree(dist);
    if (world().rank() == 0 && gpt) std::printf("W=%d %s\n", world().size(), dopt.grid_plan().summary().c_str());
  }
}

// Layout B without TP: the parameters become runs of the optimizer's parameter buffer (backward
// order within a bucket), so the all-gather writes them in place. A second optimizer over the same
// parameters takes them over; the first one notices and copies its results as before: still bitwise.
TEST(DistributedMuon, ElementWiseParametersAliasTheBufferAndSurviveBeingTakenOver) {
  const GptShape s;
  const NamedParameters init = orthotron::testing::gpt_params(s, 11);
  const SplitRegistry splits = orthotron::testing::gpt_splits(s);
  NamedParameters shared = clone_params(init), ref = clone_params(init);
  DistributedMuonWithAdamW first(shared, world(), test_groups(), default_routing_rules(), splits, {}, "element_wise");
  // One bucket: every parameter follows the next one in the buffer (backward order), back to back.
  for (size_t i = 0; i + 1 < shared.size(); ++i) {
    const auto* here = static_cast<const char*>(shared[i].tensor.data_ptr());
    const auto* next = static_cast<const char*>(shared[i + 1].tensor.data_ptr());
    EXPECT_EQ(here, next + shared[i + 1].tensor.nbytes())
        << shared[i].name << " is not aliased after " << shared[i + 1].name;
  }
  expect_bitwise(shared, init, "values kept when aliased");
  const void* before = shared[0].tensor.data_ptr();
  DistributedMuonWithAdamW second(shared, world(), test_groups(), default_routing_rules(), splits, {}, "element_wise");
  second.set_bucket_bytes(4 * world().size() * 1007);
  ASSERT_NE(shared[0].tensor.data_ptr(), before) << "the second optimizer did not take the parameters over";
  expect_bitwise(shared, init, "values kept when taken over");
  MuonWithAdamW sopt(ref, test_groups(), default_routing_rules(), splits);
  for (int step = 0; step < 4; ++step) {
    set_grads(shared, ref, step);
    first.step();
    sopt.step();
  }
  expect_bitwise(shared, ref, "the first optimizer after the second took the parameters over, 4 steps");
  expect_ranks_agree(shared);
}

// Layout A: a parameter aliases the parameter buffer where no bucket boundary of its owner's shard
// cuts it; a cut one is unpacked by copy into storage of its own; a new bucket cut moves the aliased
// ones into a fresh buffer (their old and new runs may overlap), and every step stays bitwise equal
// to the single-process container.
TEST(DistributedMuon, OwnerAlignedParametersAliasTheBufferWhereNoBucketCutsThem) {
  const GptShape s;
  const int w = world().size();
  const NamedParameters init = orthotron::testing::gpt_params(s, 12);
  const SplitRegistry splits = orthotron::testing::gpt_splits(s);
  NamedParameters dist = clone_params(init), ref = clone_params(init);
  DistributedMuonWithAdamW dopt(dist, world(), test_groups(), default_routing_rules(), splits);
  expect_bitwise(dist, init, "values kept when aliased");
  // The buffer: the storage of any parameter that holds more than itself.
  auto buffer_of = [&] {
    for (const auto& p : dist) {
      if (p.tensor.storage().nbytes() > static_cast<size_t>(p.tensor.nbytes())) return p.tensor.storage();
    }
    return c10::Storage();
  };
  auto ranks_holding = [&](size_t i) {
    std::set<int> ranks;
    for (const auto& seg : dopt.plan().segments) {
      if (seg.param == i) ranks.insert(seg.rank);
    }
    return ranks.size();
  };
  // One bucket: a parameter is a run of the buffer unless it spans two shards (an AdamW one, with
  // the first shard's padding between its pieces).
  const c10::Storage first = buffer_of();
  ASSERT_TRUE(first);
  size_t aliased = 0;
  for (size_t i = 0; i < dist.size(); ++i) {
    if (dist[i].tensor.storage().is_alias_of(first)) {
      ++aliased;
    } else {
      EXPECT_GT(ranks_holding(i), 1u) << dist[i].name << " lies in one shard but does not alias the buffer";
    }
  }
  EXPECT_GT(2 * aliased, dist.size()) << "most parameters should alias the buffer in one bucket";
  MuonWithAdamW sopt(ref, test_groups(), default_routing_rules(), splits);
  for (int step = 0; step < 2; ++step) {
    set_grads(dist, ref, step);
    dopt.step();
    sopt.step();
  }
  expect_bitwise(dist, ref, "layout A aliased in one bucket, 2 steps");
  // Buckets: at W > 1 the bucket-major positions move, so the aliased parameters move into a fresh
  // buffer and the ones a bucket boundary cuts get storage of their own.
  dopt.set_bucket_bytes(4 * w * 1007);
  ASSERT_GT(dopt.buckets(), 2);
  expect_bitwise(dist, ref, "values kept when the bucket cut moved the parameters");
  const c10::Storage moved = buffer_of();
  ASSERT_TRUE(moved);
  size_t own = 0;
  aliased = 0;
  for (const auto& p : dist) {
    if (w > 1) {
      EXPECT_FALSE(p.tensor.storage().is_alias_of(first)) << p.name << " still holds the old buffer";
    }
    if (p.tensor.storage().is_alias_of(moved)) {
      ++aliased;
    } else {
      EXPECT_EQ(p.tensor.storage().nbytes(), static_cast<size_t>(p.tensor.nbytes())) << p.name;
      ++own;
    }
  }
  if (w > 1) {
    EXPECT_GT(own, 0u) << "no parameter is cut by a bucket boundary: the copy path is untested";
  }
  EXPECT_GT(aliased, 0u);
  for (int step = 2; step < 6; ++step) {
    set_grads(dist, ref, step);
    dopt.step();
    sopt.step();
  }
  expect_bitwise(dist, ref, "layout A in buckets after the move, 4 more steps");
  expect_ranks_agree(dist);
}

// Overlapped buckets (set_bucket_bytes): every bucket's reduce-scatter and all-gather is its own
// collective, matrices straddle bucket boundaries, and the result stays bitwise equal to the
// single-process container (exactly summable gradients) and to the one-bucket step on ordinary
// random gradients (the MPI reduce-scatter sums in rank order whatever the bucket).
TEST(DistributedMuon, BucketedStepEqualsSingleProcessAndOneBucketBitwise) {
  const GptShape s;
  const int w = world().size(), r = world().rank();
  for (const bool gpt : {true, false}) {
    const NamedParameters init = gpt ? orthotron::testing::gpt_params(s, 11) : edge_params();
    const SplitRegistry splits = gpt ? orthotron::testing::gpt_splits(s) : SplitRegistry{};
    const int64_t bucket_bytes = 4 * w * (gpt ? 1007 : 10);  // 1007 (GPT) or 10 (edge) elements per shard
    NamedParameters dist = clone_params(init), ref = clone_params(init), one = clone_params(init);
    DistributedMuonWithAdamW dopt(dist, world(), test_groups(), default_routing_rules(), splits);
    DistributedMuonWithAdamW oopt(one, world(), test_groups(), default_routing_rules(), splits);
    MuonWithAdamW sopt(ref, test_groups(), default_routing_rules(), splits);
    dopt.set_bucket_bytes(bucket_bytes);
    ASSERT_GT(dopt.buckets(), 2);
    ASSERT_EQ(oopt.buckets(), 1);
    const std::string what =
        std::string(gpt ? "GPT" : "edge shapes") + " in " + std::to_string(dopt.buckets()) + " buckets";
    // Some Muon matrix this rank owns must cross a bucket boundary, or the straddling case is untested.
    int64_t straddling = 0;
    const ShardBuckets b = make_shard_buckets(w, dopt.plan().shard_len, bucket_bytes, 4);
    for (const auto& seg : dopt.plan().segments) {
      const int64_t x = seg.buffer_offset - seg.rank * dopt.plan().shard_len;
      straddling += dopt.plan().owner[seg.param] >= 0 && b.bucket_of(x) != b.bucket_of(x + seg.count - 1);
    }
    EXPECT_GT(straddling, 0) << what;
    for (int step = 0; step < 12; ++step) {
      set_grads(dist, ref, step);
      world().stats().reset();
      dopt.step();
      sopt.step();
      if (step == 0 && w > 1) {
        EXPECT_EQ(world().stats().by_op.at("reduce_scatter").calls, dopt.buckets()) << what;
        EXPECT_EQ(world().stats().by_op.at("all_gather").calls, dopt.buckets()) << what;
      }
    }
    expect_bitwise(dist, ref, what + " vs single-process, 12 steps");
    expect_ranks_agree(dist);
    const auto& t = dopt.last_step_times();
    EXPECT_EQ(t.buckets, dopt.buckets());
    EXPECT_GE(t.total_ms, t.pack_ms + t.reduce_wait_ms + t.update_ms + t.gather_wait_ms + t.unpack_ms) << what;
    EXPECT_GT(t.update_ms, 0) << what;
    // Ordinary random gradients, the same on both: bucketed equals one bucket bit for bit.
    dist = clone_params(init);
    one = clone_params(init);
    DistributedMuonWithAdamW bucketed(dist, world(), test_groups(), default_routing_rules(), splits);
    DistributedMuonWithAdamW single_bucket(one, world(), test_groups(), default_routing_rules(), splits);
    bucketed.set_bucket_bytes(bucket_bytes);
    for (int step = 0; step < 5; ++step) {
      at::manual_seed(static_cast<uint64_t>(97 * step + r));
      for (size_t i = 0; i < dist.size(); ++i) {
        dist[i].tensor.mutable_grad() = at::randn(dist[i].tensor.sizes());
        one[i].tensor.mutable_grad() = dist[i].tensor.grad().clone();
      }
      bucketed.step();
      single_bucket.step();
    }
    expect_bitwise(dist, one, what + " vs one bucket on random gradients, 5 steps");
    // Re-bucketed mid-run, with clipping on (the norm sums the padding too, so padding that kept an
    // old layout's gradients would show) and a parameter whose gradient rank 0 lacks at one step
    // (its pieces are zeroed): still the one-bucket bits and norm.
    bucketed.set_bucket_bytes(3 * bucket_bytes + 4 * w);
    ASSERT_NE(bucketed.buckets(), 1);
    bucketed.set_max_grad_norm(1.0);
    single_bucket.set_max_grad_norm(1.0);
    for (int step = 5; step < 8; ++step) {
      at::manual_seed(static_cast<uint64_t>(97 * step + r));
      for (size_t i = 0; i < dist.size(); ++i) {
        const bool lacks = step == 6 && r == 0 && i == 1;
        dist[i].tensor.mutable_grad() = lacks ? at::Tensor() : at::randn(dist[i].tensor.sizes());
        one[i].tensor.mutable_grad() = lacks ? at::Tensor() : dist[i].tensor.grad().clone();
      }
      bucketed.step();
      single_bucket.step();
      ASSERT_GT(single_bucket.last_grad_norm(), 1.0) << "the test needs clipping to act";
      EXPECT_EQ(bucketed.last_grad_norm(), single_bucket.last_grad_norm()) << what << ", step " << step;
    }
    expect_bitwise(dist, one, what + " vs one bucket after re-bucketing, 3 more steps");
  }
}

// How many buckets must be posted once the parameters in `ready` have reported, computed from the
// plan's segments alone: the longest prefix of buckets whose every piece belongs to a ready parameter.
int64_t expected_posted(const OwnerPlan& plan, const ShardBuckets& b, const std::vector<char>& ready) {
  std::vector<char> complete(static_cast<size_t>(b.count()), 1);
  for (const auto& seg : plan.segments) {
    if (ready[seg.param]) continue;
    const int64_t x = seg.buffer_offset - seg.rank * plan.shard_len;
    for (int64_t k = b.bucket_of(x); k <= b.bucket_of(x + seg.count - 1); ++k) complete[static_cast<size_t>(k)] = 0;
  }
  int64_t posted = 0;
  while (posted < b.count() && complete[static_cast<size_t>(posted)]) ++posted;
  return posted;
}

TEST(DistributedMuon, ReductionStartedDuringBackwardEqualsOneAfterIt) {
  GptShape s;
  s.layers = 4;  // owners then mix layers, as in deeper models (at 2 layers and 2 ranks each owns one layer)
  const int w = world().size(), r = world().rank();
  for (const char* layout : {"owner_aligned", "element_wise"}) {
    for (const bool gpt : {true, false}) {
      const NamedParameters init = gpt ? orthotron::testing::gpt_params(s, 11) : edge_params();
      const SplitRegistry splits = gpt ? orthotron::testing::gpt_splits(s) : SplitRegistry{};
      const int64_t bucket_bytes = 4 * w * (gpt ? 1007 : 10);
      NamedParameters early = clone_params(init), late = clone_params(init);
      DistributedMuonWithAdamW eopt(early, world(), test_groups(), default_routing_rules(), splits, {}, layout);
      DistributedMuonWithAdamW lopt(late, world(), test_groups(), default_routing_rules(), splits, {}, layout);
      eopt.set_bucket_bytes(bucket_bytes);
      lopt.set_bucket_bytes(bucket_bytes);
      eopt.set_max_grad_norm(1.0);
      lopt.set_max_grad_norm(1.0);
      // Layout B's cut follows the buckets (whole parameters in backward order); layout A's buckets
      // are cut from its shards.
      const bool element_wise = eopt.plan().layout == ShardLayout::kElementWise;
      const ShardBuckets b = element_wise ? shard_buckets_at(w, eopt.plan().bucket_bounds)
                                          : make_shard_buckets(w, eopt.plan().shard_len, bucket_bytes, 4);
      if (element_wise) {
        ASSERT_EQ(eopt.plan().bucket_elements, bucket_bytes / 4);
        ASSERT_EQ(eopt.plan().hash, make_element_plan(eopt.plan().params, w, bucket_bytes / 4).hash);
      }
      ASSERT_EQ(b.bounds, eopt.bucket_layout().bounds);
      ASSERT_GT(eopt.buckets(), 2);
      const size_t n = early.size();
      const std::string what = std::string(gpt ? "GPT" : "edge shapes") + " in " + std::to_string(eopt.buckets()) +
                               " buckets, layout " + layout;
      for (int step = 0; step < 6; ++step) {
        SCOPED_TRACE(what + ", step " + std::to_string(step));
        eopt.zero_grad();
        lopt.zero_grad();
        // Backward's order: the last parameter's gradient first. At step 2 rank 0 has none for
        // parameter 1 (never reported; its pieces go as zeros).
        eopt.begin_backward_reduction();
        std::vector<char> ready(n, 0);
        EXPECT_EQ(eopt.reductions_posted(), expected_posted(eopt.plan(), b, ready));
        int64_t posted_at_half = -1;
        at::manual_seed(static_cast<uint64_t>(97 * step + r));
        for (size_t k = 0; k < n; ++k) {
          const size_t i = n - 1 - k;
          const bool lacks = step == 2 && r == 0 && i == 1;
          const at::Tensor g = at::randn(early[i].tensor.sizes());
          if (lacks) continue;
          early[i].tensor.mutable_grad() = g;
          late[i].tensor.mutable_grad() = g.clone();
          eopt.gradient_ready(i);
          ready[i] = 1;
          ASSERT_EQ(eopt.reductions_posted(), expected_posted(eopt.plan(), b, ready)) << "after parameter " << i;
          if (2 * (k + 1) == n || 2 * (k + 1) == n + 1) posted_at_half = eopt.reductions_posted();
        }
        // Layout A keeps each shard in backward order, layout B's buckets are runs of it: with half
        // the gradients in, the front buckets are already travelling.
        if (gpt) {
          EXPECT_GT(posted_at_half, 0);
        }
        eopt.end_backward_reduction();
        EXPECT_EQ(eopt.reductions_posted(), eopt.buckets());
        eopt.step();
        lopt.step();
        EXPECT_EQ(eopt.last_grad_norm(), lopt.last_grad_norm());
        const auto& t = eopt.last_step_times();
        EXPECT_EQ(t.buckets_in_backward, expected_posted(eopt.plan(), b, ready));
        EXPECT_EQ(lopt.last_step_times().buckets_in_backward, 0);
        EXPECT_EQ(eopt.reductions_posted(), 0);
      }
      expect_bitwise(early, late, what + ": reduced during backward vs after it, 6 steps");
      expect_ranks_agree(early);

      // A reduction started for a step that does not run is discarded by zero_grad (or
      // discard_backward_reduction) and leaves no trace.
      eopt.begin_backward_reduction();
      for (size_t i = 0; i < n; ++i) {
        early[i].tensor.mutable_grad() = at::full(early[i].tensor.sizes(), 1e6);
        eopt.gradient_ready(i);
      }
      EXPECT_EQ(eopt.reductions_posted(), eopt.buckets());
      eopt.zero_grad();
      EXPECT_EQ(eopt.reductions_posted(), 0);
      for (size_t i = 0; i < n; ++i) {
        at::manual_seed(static_cast<uint64_t>(1000 + i + static_cast<size_t>(r)));
        early[i].tensor.mutable_grad() = at::randn(early[i].tensor.sizes());
        late[i].tensor.mutable_grad() = early[i].tensor.grad().clone();
      }
      eopt.step();  // never armed: everything reduced inside step
      lopt.step();
      EXPECT_EQ(eopt.last_step_times().buckets_in_backward, 0);
      expect_bitwise(early, late, what + ": after a discarded reduction");

      // Armed too early (before an earlier micro-batch's backward): a gradient reported again after
      // its bucket left is an error naming it.
      eopt.begin_backward_reduction();
      for (size_t k = 0; k < n; ++k) eopt.gradient_ready(n - 1 - k);
      try {
        eopt.gradient_ready(n - 1);
        ADD_FAILURE() << "a gradient accumulated after its bucket was packed must throw";
      } catch (const InvalidArgument& e) {
        EXPECT_NE(std::string(e.what()).find(early[n - 1].name), std::string::npos) << e.what();
      }
      EXPECT_THROW(eopt.gradient_ready(n), InvalidArgument);
      eopt.discard_backward_reduction();
    }
  }
}

// Through autograd: GradientReadyHooks start every bucket's reduce-scatter inside backward(), only
// for the armed (last) backward of a step, and the result equals reducing after backward bit for bit.
TEST(DistributedMuon, GradientReadyHooksStartReductionsInsideBackward) {
  GptShape s;
  s.layers = 4;
  const int w = world().size(), r = world().rank();
  const NamedParameters init = orthotron::testing::gpt_params(s, 11);
  const SplitRegistry splits = orthotron::testing::gpt_splits(s);
  NamedParameters hooked = clone_params(init), plain = clone_params(init);
  DistributedMuonWithAdamW hopt(hooked, world(), test_groups(), default_routing_rules(), splits);
  DistributedMuonWithAdamW popt(plain, world(), test_groups(), default_routing_rules(), splits);
  hopt.set_bucket_bytes(4 * w * 1007);
  popt.set_bucket_bytes(4 * w * 1007);
  ASSERT_GT(hopt.buckets(), 2);
  // A loss touching every parameter: sum_i <p_i, c_i> + 0.5 |p_i|^2, with rank-dependent c_i.
  auto backward = [&](NamedParameters& params, uint64_t seed) {
    at::manual_seed(seed + static_cast<uint64_t>(r));
    at::Tensor loss = at::zeros({});
    for (auto& p : params) loss = loss + (p.tensor * at::randn(p.tensor.sizes())).sum() + 0.5 * p.tensor.square().sum();
    loss.backward();
  };
  {
    GradientReadyHooks hooks(hopt);
    EXPECT_THROW(GradientReadyHooks{hopt}, InvalidArgument);  // a tensor holds one such hook
    for (int step = 0; step < 4; ++step) {
      hopt.zero_grad();
      popt.zero_grad();
      // Two micro-batches: the first backward unarmed (the hooks do nothing), the second armed.
      backward(hooked, 100 * step);
      EXPECT_EQ(hopt.reductions_posted(), 0);
      hopt.begin_backward_reduction();
      backward(hooked, 100 * step + 50);
      EXPECT_EQ(hopt.reductions_posted(), hopt.buckets()) << "every bucket left during backward, step " << step;
      hopt.end_backward_reduction();
      backward(plain, 100 * step);
      backward(plain, 100 * step + 50);
      hopt.step();
      popt.step();
      EXPECT_EQ(hopt.last_step_times().buckets_in_backward, hopt.buckets());
      EXPECT_EQ(hopt.last_grad_norm(), popt.last_grad_norm());
    }
  }
  expect_bitwise(hooked, plain, "reduced inside backward by the hooks vs after it, 4 steps");
  // The destructor removed the hooks: an armed backward posts nothing until end_backward_reduction.
  hopt.zero_grad();
  hopt.begin_backward_reduction();
  backward(hooked, 7);
  EXPECT_EQ(hopt.reductions_posted(), 0);
  hopt.end_backward_reduction();
  EXPECT_EQ(hopt.reductions_posted(), hopt.buckets());
  hopt.discard_backward_reduction();
}

TEST(DistributedMuon, ElementWiseStateDictRoundTrip) {
  const GptShape s;
  const auto splits = orthotron::testing::gpt_splits(s);
  const NamedParameters init = orthotron::testing::gpt_params(s, 13);
  NamedParameters a = clone_params(init), b = clone_params(init), ref = clone_params(init);
  DistributedMuonWithAdamW oa(a, world(), test_groups(), default_routing_rules(), splits, {}, "element_wise");
  for (int step = 0; step < 3; ++step) {
    set_grads(a, ref, step);
    oa.step();
  }
  const StateDict sd = oa.state_dict();
  // b still holds the initial values: only load_parameter_shard (layout B's scatter of the owned
  // matrices) can bring a's.
  DistributedMuonWithAdamW ob(b, world(), test_groups(), default_routing_rules(), splits, {}, "element_wise");
  EXPECT_TRUE(ob.load_state_dict(sd).complete());
  ob.load_parameter_shard(oa.parameter_shard());
  EXPECT_EQ(ob.last_step_times().exchange_wait_ms, 0.0) << "loading is not a step: no all-to-all wait is counted";
  for (int step = 3; step < 6; ++step) {
    set_grads(a, ref, step);
    set_grads(b, ref, step);
    oa.step();
    ob.step();
  }
  expect_bitwise(a, b, "layout B: state dict round trip, then 3 steps");
  EXPECT_EQ(oa.state_elements(), ob.state_elements());
  // A state dict of layout A is another plan: refused with the hash message, on every rank.
  NamedParameters c = clone_params(init);
  DistributedMuonWithAdamW oc(c, world(), test_groups(), default_routing_rules(), splits);
  EXPECT_THROW(oc.load_state_dict(sd), StateDictError);
}

// Global gradient-norm clipping: the distributed norm is the norm of the averaged gradients (every
// element counted once across the shards), the same on every rank, and the clipped trajectory
// follows the single-process container's within fp32 summation-order differences (the norms are
// summed per tensor there and per shard here, so bitwise equality is not expected).
TEST(DistributedMuon, ClippingUsesTheGlobalNormOfTheAveragedGradients) {
  const GptShape s;
  const NamedParameters init = orthotron::testing::gpt_params(s, 12);
  NamedParameters dist = clone_params(init), ref = clone_params(init);
  DistributedMuonWithAdamW dopt(dist, world(), test_groups(), default_routing_rules(),
                                orthotron::testing::gpt_splits(s));
  MuonWithAdamW sopt(ref, test_groups(), default_routing_rules(), orthotron::testing::gpt_splits(s));
  dopt.set_max_grad_norm(5.0);
  sopt.set_max_grad_norm(5.0);
  for (int step = 0; step < 6; ++step) {
    set_grads(dist, ref, step);
    dopt.step();
    sopt.step();
    ASSERT_GT(sopt.last_grad_norm(), 5.0) << "the test needs clipping to act";
    EXPECT_NEAR(dopt.last_grad_norm(), sopt.last_grad_norm(), 1e-5 * sopt.last_grad_norm()) << "step " << step;
    at::Tensor mine = at::full({1}, dopt.last_grad_norm(), at::kDouble), root = mine.clone();
    world().broadcast(root, 0);
    EXPECT_TRUE(at::equal(mine, root)) << "ranks disagree on the gradient norm";
  }
  for (size_t i = 0; i < dist.size(); ++i) {
    EXPECT_LE(orthotron::testing::max_abs_diff(dist[i].tensor, ref[i].tensor), 1e-5) << dist[i].name;
  }
  expect_ranks_agree(dist);
}

// A NaN gradient on one rank makes every rank skip the step: nothing moves anywhere.
TEST(DistributedMuon, ANonFiniteGradientOnOneRankSkipsTheStepEverywhere) {
  const GptShape s;
  NamedParameters dist = orthotron::testing::gpt_params(s, 13), unused = clone_params(dist);
  DistributedMuonWithAdamW dopt(dist, world(), test_groups(), default_routing_rules(),
                                orthotron::testing::gpt_splits(s));
  set_grads(dist, unused, 0);
  dopt.step();
  const NamedParameters before = clone_params(dist);
  set_grads(dist, unused, 1);
  if (world().rank() == world().size() - 1) dist[4].tensor.mutable_grad()[0][0] = NAN;
  dopt.step();
  EXPECT_TRUE(dopt.last_step_skipped()) << "rank " << world().rank();
  expect_bitwise(dist, before, "parameters after a skipped step");
  EXPECT_EQ(dopt.step_count(dist[4].name), 1);
  set_grads(dist, unused, 2);
  dopt.step();
  EXPECT_FALSE(dopt.last_step_skipped());
  EXPECT_EQ(dopt.step_count(dist[4].name), 2);
}

// Each Muon matrix is orthogonalized on exactly one rank: this rank's audited NS work (debug checks
// are on in the test main) summed over ranks is the whole model's, 14 matrices (see
// test_fail_closed.cpp for the count). The plan from shapes alone is the container's at this W.
TEST(DistributedMuon, EveryMatrixIsOrthogonalizedOnceAcrossRanks) {
  const GptShape s;
  const auto splits = orthotron::testing::gpt_splits(s);
  NamedParameters params = clone_params(orthotron::testing::gpt_params(s, 12));
  NamedParameters unused = clone_params(params);
  DistributedMuonWithAdamW opt(params, world(), test_groups(), default_routing_rules(), splits);
  EXPECT_EQ(opt.plan().hash, make_owner_plan(orthotron::testing::gpt_plan_params(s, splits), world().size()).hash);
  set_grads(params, unused, 0);
  opt.step();
  const auto counts = opt.last_ns_counts();
  at::Tensor matrices = at::zeros({1}, at::kLong);
  if (counts.count(0)) matrices[0] = counts.at(0).matrices;
  world().all_reduce(matrices, ReduceOp::kSum);
  EXPECT_EQ(matrices.item<int64_t>(), 14) << "rank " << world().rank();
}

// A parameter reshaped after construction is refused on every rank before any collective (no hang).
TEST(DistributedMuon, AReshapedParameterIsRefusedOnEveryRank) {
  const GptShape s;
  NamedParameters params = clone_params(orthotron::testing::gpt_params(s, 13));
  NamedParameters unused = clone_params(params);
  DistributedMuonWithAdamW opt(params, world(), test_groups(), default_routing_rules(),
                               orthotron::testing::gpt_splits(s));
  set_grads(params, unused, 0);
  at::Tensor fc2 = params[7].tensor;  // decoder.layers.0.mlp.linear_fc2.weight [32, 48]
  ASSERT_EQ(params[7].name, "decoder.layers.0.mlp.linear_fc2.weight");
  {
    c10::NoGradGuard no_grad;
    fc2.set_(fc2.storage(), 0, {48, 32});
  }
  fc2.mutable_grad() = at::zeros({48, 32});
  try {
    opt.step();
    ADD_FAILURE() << "a reshaped parameter stepped on rank " << world().rank();
  } catch (const ShapeError& e) {
    EXPECT_NE(std::string(e.what()).find("logical shape [32, 48]"), std::string::npos) << e.what();
  }
}

// What "bitwise" needs (README): the same intra-op thread count on both sides. At 2 threads on every
// rank and in the reference the result is still bitwise equal; with the reference at another count
// it must agree to roundoff. Whether the bits then differ depends on the BLAS and the CPU (on the
// development machine, torch's MKL gave equal bits at 1, 2 and 4 threads; a BLAS that splits a
// product's inner dimension by thread rounds differently), so that is printed, not asserted.
TEST(DistributedMuon, BitwiseNeedsTheSameThreadCountOnBothSides) {
  GptShape s;
  s.hidden = 128;
  s.heads = 8;
  s.kv_heads = 4;
  s.ffn = 384;
  s.vocab = 256;
  const int saved = at::get_num_threads();
  const NamedParameters init = orthotron::testing::gpt_params(s, 14);
  auto run = [&](int threads, bool distributed) {
    at::set_num_threads(threads);
    NamedParameters params = clone_params(init), other = clone_params(init);
    const auto splits = orthotron::testing::gpt_splits(s);
    std::unique_ptr<Optimizer> opt;
    if (distributed) {
      opt = std::make_unique<DistributedMuonWithAdamW>(params, world(), test_groups(), default_routing_rules(), splits);
    } else {
      opt = std::make_unique<MuonWithAdamW>(params, test_groups(), default_routing_rules(), splits);
    }
    for (int step = 0; step < 5; ++step) {
      // set_grads fills `params` with this rank's share in the distributed run, the average otherwise.
      if (distributed) {
        set_grads(params, other, step);
      } else {
        set_grads(other, params, step);
      }
      opt->step();
    }
    return params;
  };
  const NamedParameters dist2 = run(2, true);
  const NamedParameters ref2 = run(2, false);
  const NamedParameters ref1 = run(1, false);
  at::set_num_threads(saved);
  expect_bitwise(dist2, ref2, "2 threads on both sides");
  double worst = 0;
  bool differs = false;
  for (size_t i = 0; i < dist2.size(); ++i) {
    differs = differs || !at::equal(dist2[i].tensor, ref1[i].tensor);
    const double scale = ref1[i].tensor.abs().max().item<double>();
    worst = std::max(worst, orthotron::testing::max_abs_diff(dist2[i].tensor, ref1[i].tensor) / scale);
  }
  EXPECT_LE(worst, 1e-5) << "2 threads against 1 thread must agree to roundoff";
  if (world().rank() == 0) {
    std::printf("W=%d: 2 threads vs a 1-thread reference: %s, max relative difference %.3g\n", world().size(),
                differs ? "bits differ" : "bitwise equal on this BLAS", worst);
  }
}

TEST(DistributedMuon, EdgeShapesAndRanksThatOwnNothing) {
  const NamedParameters init = edge_params();
  NamedParameters dist = clone_params(init), ref = clone_params(init);
  DistributedMuonWithAdamW dopt(dist, world(), test_groups());
  MuonWithAdamW sopt(ref, test_groups());
  for (int step = 0; step < 6; ++step) {
    set_grads(dist, ref, step);
    dopt.step();
    sopt.step();
  }
  expect_bitwise(dist, ref, "edge shapes");
  const auto& owned = dopt.plan().muon_elements_per_rank;
  const int idle = static_cast<int>(std::count(owned.begin(), owned.end(), 0));
  EXPECT_EQ(idle, std::max(0, world().size() - 4)) << "4 Muon matrices: every rank beyond the 4th owns nothing";
}

TEST(DistributedMuon, PlanMismatchIsAClearErrorNotAHang) {
  if (world().size() == 1) GTEST_SKIP() << "needs two ranks";
  const GptShape s;
  GptShape other = s;
  if (world().rank() == 1) other.ffn += 8;  // rank 1 sees different MLP shapes
  NamedParameters p = orthotron::testing::gpt_params(other, 1);
  try {
    DistributedMuonWithAdamW opt(p, world(), test_groups(), default_routing_rules(),
                                 orthotron::testing::gpt_splits(other));
    ADD_FAILURE() << "expected CommError on rank " << world().rank();
  } catch (const CommError& e) {
    EXPECT_NE(std::string(e.what()).find("owner plan mismatch"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("rank 1 hash"), std::string::npos) << e.what();
  }
  world().barrier();
}

// Bytes per rank per step, from the communicator's counters: distributed Muon in the owner-aligned
// layout against ZeRO-1 AdamW (the same container with every parameter routed to AdamW).
TEST(DistributedMuon, CommunicationWithinBoundOfZero1AdamW) {
  GptShape s;
  s.hidden = 64;
  s.ffn = 96;
  const NamedParameters init = orthotron::testing::gpt_params(s, 3);
  auto bytes_per_step = [&](std::vector<ParamGroup> groups, std::vector<RoutingRule> rules, SplitRegistry splits) {
    auto comm = world().split(0, world().rank(), "dp");
    NamedParameters p = clone_params(init), unused = clone_params(init);
    DistributedMuonWithAdamW opt(p, *comm, std::move(groups), std::move(rules), std::move(splits));
    set_grads(p, unused, 0);
    opt.step();
    comm->stats().reset();
    set_grads(p, unused, 1);
    opt.step();
    return comm->stats().bytes_sent() + comm->stats().bytes_received();
  };
  RoutingRule all_adamw;
  all_adamw.name = "everything";
  all_adamw.group = "adamw";
  const int64_t muon = bytes_per_step(test_groups(), default_routing_rules(), orthotron::testing::gpt_splits(s));
  const int64_t zero1 = bytes_per_step({test_groups()[1]}, {all_adamw}, {});  // no Muon group: it would claim nothing
  const int w = world().size();
  if (w == 1) {
    EXPECT_EQ(muon, 0);
    EXPECT_EQ(zero1, 0);
    return;
  }
  const double ratio = static_cast<double>(muon) / static_cast<double>(zero1);
  if (world().rank() == 0) {
    std::printf("W=%d bytes per rank per step: distributed Muon %lld, ZeRO-1 AdamW %lld, ratio %.4f\n", w,
                static_cast<long long>(muon), static_cast<long long>(zero1), ratio);
  }
  EXPECT_GE(ratio, 1.0);
  if (w == 4) {
    EXPECT_LE(ratio, 1.15);
  }
}

TEST(DistributedMuon, StatePerRankIsAboutOneOverW) {
  const GptShape s;
  NamedParameters p = orthotron::testing::gpt_params(s, 4);
  DistributedMuonWithAdamW opt(p, world(), test_groups(), default_routing_rules(), orthotron::testing::gpt_splits(s));
  int64_t single = 0;
  for (size_t i = 0; i < p.size(); ++i) single += (opt.plan().owner[i] >= 0 ? 1 : 2) * p[i].tensor.numel();
  at::Tensor mine = at::full({1}, opt.state_elements(), at::kLong);
  at::Tensor all = at::empty({world().size()}, at::kLong);
  world().all_gather(all, mine);
  EXPECT_EQ(all.sum().item<int64_t>(), single) << "every state element lives on exactly one rank";
  const double ideal = static_cast<double>(single) / world().size();
  if (world().rank() == 0) {
    std::printf("W=%d optimizer state elements per rank: max %lld (%.3f x 1/W), min %lld (%.3f x 1/W), single %lld\n",
                world().size(), static_cast<long long>(all.max().item<int64_t>()), all.max().item<int64_t>() / ideal,
                static_cast<long long>(all.min().item<int64_t>()), all.min().item<int64_t>() / ideal,
                static_cast<long long>(single));
  }
  EXPECT_LE(all.max().item<int64_t>(), static_cast<int64_t>(1.6 * ideal) + 1);
}

std::string state_path() {
  return ::testing::TempDir() + "/orthotron_dist_state_w" + std::to_string(world().size()) + ".safetensors";
}

// Three models: uninterrupted; save / new optimizer / load / continue; fresh optimizer. The first
// two are bitwise equal, the third differs.
TEST(DistributedMuon, ThreeModelsSaveLoadContinue) {
  const GptShape s;
  const NamedParameters init = orthotron::testing::gpt_params(s, 21);
  NamedParameters a = clone_params(init), b = clone_params(init), c = clone_params(init), unused = clone_params(init);
  const auto splits = orthotron::testing::gpt_splits(s);
  DistributedMuonWithAdamW oa(a, world(), test_groups(), default_routing_rules(), splits);
  auto ob = std::make_unique<DistributedMuonWithAdamW>(b, world(), test_groups(), default_routing_rules(), splits);
  auto oc = std::make_unique<DistributedMuonWithAdamW>(c, world(), test_groups(), default_routing_rules(), splits);
  auto run = [&](int from, int to) {
    for (int step = from; step < to; ++step) {
      set_grads(a, unused, step);
      set_grads(b, unused, step);
      set_grads(c, unused, step);
      oa.step();
      ob->step();
      oc->step();
    }
  };
  run(0, 4);
  save_optimizer_state(*ob, state_path(), &world());
  ob = std::make_unique<DistributedMuonWithAdamW>(b, world(), test_groups(), default_routing_rules(), splits);
  const LoadReport report = load_optimizer_state(*ob, state_path(), &world());
  EXPECT_TRUE(report.complete()) << report.to_string();
  oc = std::make_unique<DistributedMuonWithAdamW>(c, world(), test_groups(), default_routing_rules(), splits);
  run(4, 8);
  expect_bitwise(a, b, "uninterrupted vs save/load/continue");
  bool all_equal = true;
  for (size_t i = 0; i < a.size(); ++i) all_equal = all_equal && at::equal(a[i].tensor, c[i].tensor);
  EXPECT_FALSE(all_equal) << "a fresh optimizer must differ: the state matters";
  EXPECT_EQ(ob->step_count("decoder.final_layernorm.weight"), 8);
}

TEST(DistributedMuon, LoadErrorsAreClearOnEveryRankAndParametersResync) {
  const GptShape s;
  const auto splits = orthotron::testing::gpt_splits(s);
  NamedParameters p = orthotron::testing::gpt_params(s, 31), unused = clone_params(p);
  DistributedMuonWithAdamW opt(p, world(), test_groups(), default_routing_rules(), splits);
  set_grads(p, unused, 0);
  opt.step();
  const StateDict sd = opt.state_dict();

  // Another plan (the output projections routed to AdamW) refuses this state.
  RoutingRule proj_to_adamw;
  proj_to_adamw.name = "proj";
  proj_to_adamw.patterns = {"*linear_proj*"};
  proj_to_adamw.group = "adamw";
  auto rules = default_routing_rules();
  rules.insert(rules.begin(), proj_to_adamw);
  NamedParameters q = clone_params(p);
  DistributedMuonWithAdamW other(q, world(), test_groups(), rules, splits);
  try {
    other.load_state_dict(sd);
    ADD_FAILURE() << "expected StateDictError";
  } catch (const StateDictError& e) {
    EXPECT_NE(std::string(e.what()).find("owner plan"), std::string::npos) << e.what();
  }

  // A state dict offered to the wrong rank fails on that rank, and every rank throws.
  if (world().size() > 1) {
    StateDict wrong = sd;
    if (world().rank() == 1) {
      wrong.metadata["orthotron.layout"].replace(wrong.metadata["orthotron.layout"].find("\"rank\":1"), 8,
                                                 "\"rank\":0");
    }
    EXPECT_THROW(opt.load_state_dict(wrong), StateDictError) << "on rank " << world().rank();
  }
  // A single-process state dict has no layout record.
  MuonWithAdamW single(clone_params(p), test_groups(), default_routing_rules(), splits);
  EXPECT_THROW(opt.load_state_dict(single.state_dict()), StateDictError);

  // After a load, every rank's parameters are bitwise equal even if they drifted apart before it.
  {
    c10::NoGradGuard no_grad;
    for (auto& t : p) t.tensor.add_(world().rank() * 1e-3);
  }
  opt.load_state_dict(sd);
  expect_ranks_agree(p);
}

}  // namespace
}  // namespace orthotron
