// test_checkpoint_load.cpp: the collective checkpoint load on real ranks (CTest runs it at 1 and 2
// ranks), for what the end-to-end scripts cannot reach through the engine's config: every rank's
// CPU generator state restored by a same-size load; a checkpoint of another split registry refused
// naming the parameter; parameters and optimizer state saved in BFloat16 loading into a Float job
// (lossless, reported) while Float values that BFloat16 cannot hold are refused, naming the tensor.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>

#include "base/errors.h"
#include "engine/checkpoint/checkpoint.h"
#include "gpt_fixture.h"
#include "mpi_world.h"
#include "parallel/mpi_runtime.h"
#include "test_util.h"

namespace orthotron {
namespace {

using orthotron::testing::contains;
using orthotron::testing::GptShape;

using orthotron::testing::world;

using orthotron::testing::SharedRoot;

struct Job {
  NamedParameters params;
  SplitRegistry splits;
  std::unique_ptr<DistributedMuonWithAdamW> opt;
  Job(at::ScalarType dtype, SplitGranularity g, uint64_t seed, const std::string& layout = "owner_aligned",
      int64_t bucket_bytes = 0)
      : splits(orthotron::testing::gpt_splits(GptShape{}, g)) {
    params = orthotron::testing::gpt_params(GptShape{}, seed);
    for (auto& p : params) p.tensor = p.tensor.detach().to(dtype).requires_grad_(true);
    opt = std::make_unique<DistributedMuonWithAdamW>(params, world(), default_groups(), default_routing_rules(), splits,
                                                     TensorParallelContext{}, layout);
    opt->set_bucket_bytes(bucket_bytes);
  }
  void step(uint64_t seed) {
    at::manual_seed(seed);  // the same gradients on every rank
    for (auto& p : params) p.tensor.mutable_grad() = (at::randn(p.tensor.sizes()) * 0.1).to(p.tensor.scalar_type());
    opt->step();
  }
};

CheckpointProgress progress_at(int64_t it) {
  CheckpointProgress p;
  p.iteration = it;
  p.consumed_samples = 8 * it;
  return p;
}

TEST(CheckpointLoad, EveryRanksGeneratorStateIsRestored) {
  Job job(at::kFloat, SplitGranularity::kQkv, 3);
  job.step(11);
  const SharedRoot dir("rng");
  const std::string& root = dir.path;
  at::manual_seed(100 + static_cast<uint64_t>(world().rank()));  // a different stream on every rank
  at::randn({3});
  save_checkpoint(root, progress_at(2), *job.opt, "config: test\n", 0);
  const at::Tensor after_save = at::randn({16});
  at::manual_seed(999);
  const CheckpointProgress p = load_checkpoint(root + "/" + checkpoint_name(2), *job.opt);
  EXPECT_TRUE(p.rng_restored);
  const at::Tensor after_load = at::randn({16});
  EXPECT_TRUE(at::equal(after_save, after_load)) << "rank " << world().rank();
  // And the streams really were per rank: rank 1's draw differs from rank 0's.
  if (world().size() > 1) {
    const float mine = after_load[0].item<float>();
    at::Tensor hi = at::full({1}, mine), neg_lo = at::full({1}, -mine);
    world().all_reduce(hi, ReduceOp::kMax);
    world().all_reduce(neg_lo, ReduceOp::kMax);
    EXPECT_LT(-neg_lo.item<float>(), hi.item<float>());
  }
}

// A checkpoint saved under one shard layout resumes under the other (resharded: both save every
// Muon matrix whole on its owner and AdamW runs by range), and training continues bitwise as the
// uninterrupted run under the saving layout. Layout B's cut follows its buckets, so another bucket
// size under layout B is another cut, resharded the same way.
TEST(CheckpointLoad, ResumesUnderTheOtherShardLayoutBitwise) {
  struct Case {
    std::string from;
    int64_t from_bytes;
    std::string to;
    int64_t to_bytes;
  };
  for (const Case& c :
       {Case{"owner_aligned", 0, "element_wise", 0}, Case{"element_wise", 0, "owner_aligned", 0},
        Case{"element_wise", 4 * 3000, "element_wise", 0}, Case{"element_wise", 4 * 1000, "element_wise", 4 * 3000},
        Case{"element_wise", 4 * 1000, "owner_aligned", 4 * 1000}}) {
    const std::string& from = c.from;
    const std::string& to = c.to;
    SCOPED_TRACE(from + " in buckets of " + std::to_string(c.from_bytes) + " bytes -> " + to + " in " +
                 std::to_string(c.to_bytes));
    Job straight(at::kFloat, SplitGranularity::kQkv, 3, from, c.from_bytes);
    Job saver(at::kFloat, SplitGranularity::kQkv, 3, from, c.from_bytes);
    for (uint64_t s = 0; s < 2; ++s) {
      straight.step(20 + s);
      saver.step(20 + s);
    }
    if (from == "element_wise") {
      // Re-cutting the shards after a step would have to move the state: refused on every rank alike.
      EXPECT_THROW(saver.opt->set_bucket_bytes(c.from_bytes + 4 * 700), InvalidArgument);
      saver.opt->set_bucket_bytes(c.from_bytes);  // the same cut: allowed
    }
    const SharedRoot dir("layouts");
    save_checkpoint(dir.path, progress_at(2), *saver.opt, "config: test\n", 0);
    Job loader(at::kFloat, SplitGranularity::kQkv, 8, to, c.to_bytes);  // other initial values
    ASSERT_NE(loader.opt->plan().hash, saver.opt->plan().hash);
    const CheckpointProgress p = load_checkpoint(dir.path + "/" + checkpoint_name(2), *loader.opt);
    EXPECT_EQ(p.iteration, 2);
    EXPECT_FALSE(p.rng_restored) << "another layout is another grid";
    for (uint64_t s = 2; s < 4; ++s) {
      straight.step(20 + s);
      loader.step(20 + s);
    }
    for (size_t i = 0; i < straight.params.size(); ++i) {
      EXPECT_TRUE(at::equal(straight.params[i].tensor, loader.params[i].tensor))
          << from << " -> " << to << ": " << straight.params[i].name << " on rank " << world().rank();
    }
    EXPECT_EQ(loader.opt->step_count(loader.params[0].name), 4);
  }
}

TEST(CheckpointLoad, AnotherSplitRegistryIsNamed) {
  Job saved(at::kFloat, SplitGranularity::kQkv, 3);
  saved.step(11);
  const SharedRoot dir("splits");
  const std::string& root = dir.path;
  save_checkpoint(root, progress_at(2), *saved.opt, "config: test\n", 0);
  Job other(at::kFloat, SplitGranularity::kPerHead, 3);
  const std::string msg = orthotron::testing::thrown_message<StateDictError>(
      [&] { load_checkpoint(root + "/" + checkpoint_name(2), *other.opt); });
  EXPECT_TRUE(contains(msg,
                       "checkpoint saved with another split registry: parameter "
                       "'decoder.layers.0.self_attention.linear_qkv.weight' is split into 3 parts (q "))
      << msg;
  EXPECT_TRUE(contains(msg, "in the checkpoint, split into ")) << msg;
}

TEST(CheckpointLoad, BFloat16LoadsIntoFloatLosslesslyAndTheReverseOnlyWhenExact) {
  Job bf(at::kBFloat16, SplitGranularity::kQkv, 3);
  bf.step(11);
  const SharedRoot dir("dtype");
  const std::string& root = dir.path;
  save_checkpoint(root, progress_at(2), *bf.opt, "config: test\n", 0);
  Job f(at::kFloat, SplitGranularity::kQkv, 4);
  const CheckpointProgress p = load_checkpoint(root + "/" + checkpoint_name(2), *f.opt);
  EXPECT_FALSE(p.state_load.converted.empty()) << p.state_load.to_string();
  for (size_t i = 0; i < f.params.size(); ++i) {
    EXPECT_TRUE(at::equal(f.params[i].tensor, bf.params[i].tensor.to(at::kFloat))) << f.params[i].name;
  }
  const StateDict bf_state = bf.opt->state_dict(), f_state = f.opt->state_dict();
  for (const auto& [key, t] : bf_state.tensors) {
    if (t.scalar_type() == at::kBFloat16) {
      EXPECT_TRUE(at::equal(f_state.tensors.at(key), t.to(at::kFloat))) << key;
    }
  }
  // Float values after a Float step: BFloat16 cannot hold them; the parameter is named.
  f.step(12);
  save_checkpoint(root, progress_at(3), *f.opt, "config: test\n", 0);
  Job bf_target(at::kBFloat16, SplitGranularity::kQkv, 3);
  const std::string msg = orthotron::testing::thrown_message<StateDictError>(
      [&] { load_checkpoint(root + "/" + checkpoint_name(3), *bf_target.opt); });
  EXPECT_TRUE(contains(msg, "tensor 'model/")) << msg;
  EXPECT_TRUE(contains(msg, "is Float, the live state is BFloat16: converting would lose bits")) << msg;
}

}  // namespace
}  // namespace orthotron
