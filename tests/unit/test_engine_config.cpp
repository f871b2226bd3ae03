// test_engine_config.cpp: the engine's YAML document (every section through its field table),
// `--set` overrides validated like the file and named in messages, the resolved round trip, path
// expansion, and the learning-rate schedules.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <fstream>

#include "base/errors.h"
#include "engine/config/engine_config.h"
#include "engine/train/lr_schedule.h"
#include "test_util.h"

namespace orthotron {
namespace {

using orthotron::testing::contains;
using orthotron::testing::thrown_message;
using orthotron::testing::unique_temp_path;

std::string source_dir() {
  const char* env = std::getenv("ORTHOTRON_SOURCE_DIR");
  return env ? env : ORTHOTRON_SOURCE_DIR_DEFAULT;
}

std::string write_yaml(const std::string& text, const std::string& tag = "config.yaml") {
  const std::string path = unique_temp_path(tag);
  std::ofstream(path) << text;
  return path;
}

/// The ConfigError of loading `yaml` with `overrides`; checks every fragment is in the message.
std::string config_error(const std::string& yaml, const std::vector<std::string>& overrides,
                         std::initializer_list<std::string> fragments) {
  const std::string path = write_yaml(yaml);
  const std::string msg = thrown_message<ConfigError>([&] { load_engine_config(path, overrides); });
  for (const auto& f : fragments) {
    EXPECT_TRUE(contains(msg, f == "FILE" ? path : f)) << "missing '" << f << "' in: " << msg;
  }
  return msg;
}

TEST(EngineConfig, ShippedConfigsLoadWithTheirValues) {
  const EngineConfig c = load_engine_config(source_dir() + "/configs/gpt_tiny.yaml");
  EXPECT_EQ(c.model.num_layers, 4);
  EXPECT_EQ(c.model.hidden_size, 128);
  EXPECT_EQ(c.model.max_seq_length, c.data.seq_length) << "the rotary tables follow data.seq_length";
  EXPECT_EQ(c.training.lr_schedule.kind, LrScheduleKind::kWsd);
  EXPECT_EQ(c.optimizer.groups.size(), 2u);
  EXPECT_EQ(c.model.qkv_split, c.splits.qkv);
}

TEST(EngineConfig, UnknownKeysNameFileLineAndClosestKey) {
  config_error("training:\n  micro_batch_size: 4\n  train_iter: 5\n", {},
               {"FILE", ":3:", "unknown key 'train_iter' in training", "did you mean 'train_iters'?"});
  config_error("modle:\n  num_layers: 2\n", {}, {"FILE", ":1:", "unknown key 'modle'", "did you mean 'model'?"});
  config_error("training:\n  lr_schedule:\n    kind: cosine\n    warmpu: 3\n", {},
               {":4:", "training.lr_schedule", "did you mean 'warmup'?"});
}

TEST(EngineConfig, WrongTypesAndRangesAreNamed) {
  config_error("training:\n  micro_batch_size: many\n", {},
               {":2:", "training.micro_batch_size must be an integer, got 'many'"});
  config_error("data:\n  seq_length: 1\n", {}, {":2:", "data.seq_length must be in [2,", "got 1"});
  config_error("training:\n  lr_schedule:\n    kind: cosin\n", {}, {":3:", "did you mean 'cosine'?"});
  config_error("model:\n  hidden_size: 130\n  num_attention_heads: 4\n", {},
               {"FILE", "model.hidden_size = 130 must be a multiple of model.num_attention_heads = 4"});
  config_error("parallel:\n  tensor_parallel: 0\n", {}, {"parallel.tensor_parallel must be in [1,", "got 0"});
  config_error("training:\n  train_iters: 10\n  lr_schedule:\n    warmup: 11\n", {},
               {"training.lr_schedule.warmup (11) exceeds training.train_iters (10)"});
}

TEST(EngineConfig, OverridesSetValuesAndWinOverTheFile) {
  const std::string path = write_yaml("training:\n  train_iters: 50\n");
  const EngineConfig c =
      load_engine_config(path, {"training.train_iters=7", "training.lr_schedule.kind=cosine",
                                "optimizer.groups.muon.lr=0.005", "data.shuffle=false", "training.train_iters=9"});
  EXPECT_EQ(c.training.train_iters, 9) << "the last override wins";
  EXPECT_EQ(c.training.lr_schedule.kind, LrScheduleKind::kCosine);
  EXPECT_FALSE(c.data.shuffle);
  bool found = false;
  for (const auto& g : c.optimizer.groups) {
    if (g.name == "muon") {
      EXPECT_DOUBLE_EQ(g.muon.lr, 0.005);
      found = true;
    }
  }
  EXPECT_TRUE(found);
}

TEST(EngineConfig, OverrideErrorsNameTheOverride) {
  config_error("training:\n  train_iters: 50\n", {"training.train_iter=7"},
               {"--set training.train_iter=7", "unknown key 'train_iter' in training", "did you mean 'train_iters'?"});
  config_error("{}\n", {"trainig.train_iters=7"}, {"--set trainig.train_iters=7", "did you mean 'training'?"});
  config_error("{}\n", {"training.train_iters=seven"},
               {"--set training.train_iters=seven", "must be an integer, got 'seven'"});
  config_error("{}\n", {"training.train_iters"}, {"--set training.train_iters", "expected KEY=VALUE"});
  config_error("{}\n", {"training..train_iters=3"}, {"empty part"});
  config_error("training:\n  train_iters: 50\n", {"training.train_iters.x=3"},
               {"'training.train_iters' holds a value"});
  config_error("{}\n", {"training.train_iters="}, {"the value is empty"});
}

TEST(EngineConfig, AFlowMappingOverrideMakesTheAdamWVariant) {
  const EngineConfig c =
      load_engine_config(source_dir() + "/configs/gpt_tiny.yaml",
                         {"optimizer.groups={adamw: {lr: 0.003, betas: [0.9, 0.95], weight_decay: 0.0}}",
                          "optimizer.rules=[{name: all, match: \"*\", group: adamw}]"});
  ASSERT_EQ(c.optimizer.groups.size(), 1u);
  EXPECT_EQ(c.optimizer.groups[0].algorithm, Algorithm::kAdamW);
  ASSERT_EQ(c.optimizer.rules.size(), 1u);
}

TEST(EngineConfig, TheResolvedConfigLoadsBackToItself) {
  const EngineConfig a =
      load_engine_config(source_dir() + "/configs/gpt_tiny.yaml", {"training.train_iters=33", "splits.qkv=per_head"});
  const std::string text = engine_config_to_yaml(a);
  const EngineConfig b = load_engine_config(write_yaml(text, "resolved.yaml"));
  EXPECT_EQ(engine_config_to_yaml(b), text);
  EXPECT_EQ(b.training.train_iters, 33);
  EXPECT_EQ(b.splits.qkv, SplitGranularity::kPerHead);
}

TEST(EngineConfig, PathsExpandVariablesWithDefaults) {
  ::setenv("ORTHOTRON_TEST_DIR", "/x/y", 1);
  EXPECT_EQ(expand_path("${ORTHOTRON_TEST_DIR}/train", "k"), "/x/y/train");
  ::unsetenv("ORTHOTRON_DATA");
  ::setenv("ORTHOTRON_CACHE", "/cache", 1);
  EXPECT_EQ(expand_path("${ORTHOTRON_DATA}/valid", "k"), "/cache/data/valid");
  ::setenv("HOME", "/home/u", 1);
  EXPECT_EQ(expand_path("~/d", "k"), "/home/u/d");
  ::unsetenv("ORTHOTRON_SURELY_UNSET");
  const std::string msg =
      thrown_message<ConfigError>([] { expand_path("${ORTHOTRON_SURELY_UNSET}/a", "data.train_prefix"); });
  EXPECT_TRUE(contains(msg, "data.train_prefix")) << msg;
  EXPECT_TRUE(contains(msg, "ORTHOTRON_SURELY_UNSET")) << msg;
}

TEST(LrSchedule, WarmupThenCosineToTheFloor) {
  LrScheduleOptions s;
  s.kind = LrScheduleKind::kCosine;
  s.warmup = 10;
  s.min_ratio = 0.1;
  EXPECT_DOUBLE_EQ(lr_factor(s, 1, 110), 0.1);
  EXPECT_DOUBLE_EQ(lr_factor(s, 5, 110), 0.5);
  EXPECT_DOUBLE_EQ(lr_factor(s, 10, 110), 1.0);
  EXPECT_NEAR(lr_factor(s, 60, 110), 0.55, 1e-12) << "halfway: the mean of 1 and the floor";
  EXPECT_NEAR(lr_factor(s, 110, 110), 0.1, 1e-12);
  for (int64_t i = 11; i < 110; ++i) EXPECT_GE(lr_factor(s, i, 110), lr_factor(s, i + 1, 110));
  EXPECT_THROW(lr_factor(s, 0, 110), InvalidArgument);
  EXPECT_THROW(lr_factor(s, 111, 110), InvalidArgument);
}

TEST(LrSchedule, WarmupStableDecay) {
  LrScheduleOptions s;
  s.kind = LrScheduleKind::kWsd;
  s.warmup = 10;
  s.min_ratio = 0.0;
  s.decay_fraction = 0.2;  // 100 post-warmup iterations: 80 stable, 20 decaying
  EXPECT_DOUBLE_EQ(lr_factor(s, 10, 110), 1.0);
  EXPECT_DOUBLE_EQ(lr_factor(s, 90, 110), 1.0) << "still stable";
  EXPECT_DOUBLE_EQ(lr_factor(s, 91, 110), 0.95);
  EXPECT_DOUBLE_EQ(lr_factor(s, 100, 110), 0.5);
  EXPECT_DOUBLE_EQ(lr_factor(s, 110, 110), 0.0);
  s.kind = LrScheduleKind::kConstant;
  EXPECT_DOUBLE_EQ(lr_factor(s, 110, 110), 1.0);
}

TEST(EngineConfig, CheckpointSectionDefaultsOverridesAndRoundTrip) {
  const EngineConfig d = load_engine_config(source_dir() + "/configs/gpt_tiny.yaml");
  EXPECT_EQ(d.checkpoint.dir, "") << "the shipped config saves nothing unless asked";
  EXPECT_EQ(d.checkpoint.resume, "none");
  EXPECT_EQ(d.checkpoint.keep_last, 2);
  const EngineConfig c = load_engine_config(
      source_dir() + "/configs/gpt_tiny.yaml",
      {"checkpoint.dir=/tmp/ck", "checkpoint.save_interval=5", "checkpoint.keep_last=0", "checkpoint.resume=auto"});
  EXPECT_EQ(c.checkpoint.dir, "/tmp/ck");
  EXPECT_EQ(c.checkpoint.save_interval, 5);
  EXPECT_EQ(c.checkpoint.keep_last, 0);
  EXPECT_EQ(c.checkpoint.resume, "auto");
  const std::string text = engine_config_to_yaml(c);
  EXPECT_TRUE(contains(text, "checkpoint:")) << text;
  const EngineConfig b = load_engine_config(write_yaml(text, "resolved_ckpt.yaml"));
  EXPECT_EQ(engine_config_to_yaml(b), text);
  EXPECT_EQ(b.checkpoint.save_interval, 5);
}

TEST(EngineConfig, CheckpointSectionRejectsBadValues) {
  config_error("checkpoint:\n  keep_lst: 3\n", {}, {"FILE", ":2:", "did you mean 'keep_last'?"});
  config_error("checkpoint:\n  save_interval: -1\n", {}, {"save_interval"});
  config_error("checkpoint:\n  resume: auto\n", {}, {"resume: auto needs checkpoint.dir"});
  config_error("{}\n", {"checkpoint.keep_last=x"}, {"--set checkpoint.keep_last=x"});
  config_error("checkpoint:\n  on_save_error: ignore\n", {}, {"on_save_error", "stop"});
}

}  // namespace
}  // namespace orthotron
