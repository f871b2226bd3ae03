// engine_config.h: the one YAML document that configures a pretraining run (model, data, training,
// optimizer, splits, parallel, logging, checkpoint), read strictly through field tables (an unknown or
// misspelled key names the file, line and closest valid key; a wrong type or out-of-range value is
// named with expected versus actual), with `--set a.b.c=v` command-line overrides validated the
// same way, and written back resolved (every default spelled out) for the run's outputs.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "base/field_table.h"
#include "engine/model/gpt_options.h"
#include "optim/optimizer_config.h"

namespace orthotron {

/// Where the tokens come from. Paths may use ${VAR} (environment) and a leading ~; ${ORTHOTRON_DATA}
/// defaults to ${ORTHOTRON_CACHE:-~/.cache/orthotron}/data, the dataset launch/prepare_data.sh builds.
struct DataOptions {
  std::string train_prefix = "${ORTHOTRON_DATA}/train";  ///< Megatron .bin/.idx prefix
  std::string valid_prefix = "${ORTHOTRON_DATA}/valid";
  std::string tokenizer = "sentencepiece";  ///< sentencepiece | byte (only its vocabulary size is used here)
  std::string tokenizer_model = "${ORTHOTRON_DATA}/tokenizer.model";
  int64_t seq_length = 128;
  int64_t seed = 1234;  ///< the sample shuffle
  bool shuffle = true;
};

enum class LrScheduleKind { kConstant, kCosine, kWsd };
const EnumNames<LrScheduleKind>& lr_schedule_kind_names();

/// Multiplies every optimizer group's configured lr (see engine/train/lr_schedule.h).
struct LrScheduleOptions {
  LrScheduleKind kind = LrScheduleKind::kCosine;
  int64_t warmup = 0;           ///< linear warmup iterations (from lr / warmup up to lr)
  double min_ratio = 0.1;       ///< the floor, as a fraction of each group's lr
  double decay_fraction = 0.2;  ///< wsd: the last fraction of the iterations decays linearly to the floor
};

enum class NonfinitePolicy { kSkip, kStop };
const EnumNames<NonfinitePolicy>& nonfinite_policy_names();

struct TrainingOptions {
  int64_t micro_batch_size = 4;
  int64_t gradient_accumulation = 1;
  int64_t train_iters = 100;
  int64_t seed = 1234;                                    ///< model initialization
  double max_grad_norm = 1.0;                             ///< global gradient-norm clipping; 0 turns it off
  NonfinitePolicy on_nonfinite = NonfinitePolicy::kSkip;  ///< NaN/Inf loss or gradient norm
  int64_t eval_interval = 50;  ///< validation every N iterations (and after the last); 0: only after the last
  int64_t eval_iters = 4;      ///< validation batches (global batch size each)
  int64_t threads = 0;         ///< intra-op threads per rank; 0: OMP_NUM_THREADS or the library default
  LrScheduleOptions lr_schedule;
};

/// How fused weights split into the matrices Muon orthogonalizes one by one.
struct SplitOptions {
  SplitGranularity qkv = SplitGranularity::kQkv;  ///< none | qkv | per_head
  bool gate_up = true;                            ///< linear_fc1 as separate gate and up matrices
};

struct ParallelOptions {
  int64_t tensor_parallel = 1;        ///< T: ranks t + d T, t < T, form tensor-parallel group d (Megatron's order)
  std::string device = "cpu";         ///< cpu (MPI) | cuda (NCCL, one GPU per rank)
  std::string shard_layout = "auto";  ///< distributed Muon's DP layout: auto | owner_aligned | element_wise
  int64_t bucket_mb = 16;  ///< overlapped buckets of the gradient reduce-scatter / parameter all-gather (MiB); 0: one
  bool overlap_backward = true;  ///< start each bucket's reduce-scatter during backward, once its gradients are final
};

struct LoggingOptions {
  int64_t log_interval = 1;             ///< a log line every N iterations
  std::string output_dir = "runs/gpt";  ///< log copy, metrics.jsonl, config.yaml
  bool progress = true;                 ///< a progress line with ETA on a terminal
};

/// Sharded checkpoints (engine/checkpoint/checkpoint.h). Nothing is saved while dir is empty.
struct CheckpointOptions {
  std::string dir;              ///< where iter_NNNNNNN/ directories go (${VAR} and ~ expand); empty: no checkpoints
  int64_t save_interval = 0;    ///< a checkpoint every N iterations; 0: no periodic saves
  bool save_at_end = true;      ///< a checkpoint after the last iteration (when dir is set)
  int64_t keep_last = 2;        ///< committed checkpoints kept (oldest removed first); 0: keep all
  bool async = false;           ///< host copy blocks; a background thread writes; commit at a later iteration
  std::string resume = "none";  ///< none | auto (the newest valid one under dir, if any) | a checkpoint directory
  std::string on_save_error = "stop";  ///< stop (the run ends with the error) | warn (log it and train on)
};

struct EngineConfig {
  std::string source;  ///< the file it was read from
  std::vector<std::string> overrides;
  GptOptions model;  ///< vocab_size 0: the tokenizer's; max_seq_length: data.seq_length
  DataOptions data;
  TrainingOptions training;
  OptimizerConfig optimizer;
  SplitOptions splits;
  ParallelOptions parallel;
  LoggingOptions logging;
  CheckpointOptions checkpoint;
};

/// The top-level sections of a config file.
const std::vector<std::string>& engine_config_sections();

/// Reads `path`, applies `overrides` ("training.train_iters=10", as base/yaml_overrides.h), and
/// parses every section. ConfigError naming the file:line (or the override) for anything wrong.
EngineConfig load_engine_config(const std::string& path, const std::vector<std::string>& overrides = {});

/// The resolved configuration as one YAML document (every default written out); loading it back
/// gives the same configuration.
std::string engine_config_to_yaml(const EngineConfig& config);

/// `text` with ${VAR} replaced from the environment and a leading ~ by $HOME; ${ORTHOTRON_DATA}
/// and ${ORTHOTRON_CACHE} have the defaults above. ConfigError naming `key` for an unset variable.
std::string expand_path(const std::string& text, const std::string& key);

const FieldTable<GptOptions>& gpt_option_fields();
const FieldTable<DataOptions>& data_option_fields();
const FieldTable<TrainingOptions>& training_option_fields();
const FieldTable<LrScheduleOptions>& lr_schedule_option_fields();
const FieldTable<SplitOptions>& split_option_fields();
const FieldTable<ParallelOptions>& parallel_option_fields();
const FieldTable<LoggingOptions>& logging_option_fields();
const FieldTable<CheckpointOptions>& checkpoint_option_fields();

}  // namespace orthotron
