// engine_config.cpp: the engine's field tables, the strict loader with overrides, and the emitter.
#include "engine/config/engine_config.h"

#include <cstdlib>
#include <limits>

#include "base/errors.h"
#include "base/yaml_document.h"
#include "base/yaml_overrides.h"
#include "optim/split_registry.h"

namespace orthotron {

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kMaxInt = 1e15;

template <typename T>
Field<T> choice_field(std::string key, std::string doc, std::vector<std::string> choices, std::string& (*access)(T&)) {
  Field<T> f = string_field<T>(std::move(key), std::move(doc), access);
  f.kind = FieldKind::kChoice;
  f.choices = std::move(choices);
  return f;
}

const EnumNames<SplitGranularity>& split_granularity_names() {
  static const EnumNames<SplitGranularity> names(
      "split granularity",
      {{SplitGranularity::kNone, "none"}, {SplitGranularity::kQkv, "qkv"}, {SplitGranularity::kPerHead, "per_head"}});
  return names;
}

/// Emits `table`'s fields of `value` as the mapping `key`.
template <typename T>
void emit_section(YAML::Emitter& out, const std::string& key, const FieldTable<T>& table, const T& value) {
  out << YAML::Key << key << YAML::Value << YAML::BeginMap;
  table.emit_yaml(out, value);
  out << YAML::EndMap;
}

}  // namespace

const EnumNames<LrScheduleKind>& lr_schedule_kind_names() {
  static const EnumNames<LrScheduleKind> names(
      "learning-rate schedule",
      {{LrScheduleKind::kConstant, "constant"}, {LrScheduleKind::kCosine, "cosine"}, {LrScheduleKind::kWsd, "wsd"}});
  return names;
}

const EnumNames<NonfinitePolicy>& nonfinite_policy_names() {
  static const EnumNames<NonfinitePolicy> names("non-finite policy",
                                                {{NonfinitePolicy::kSkip, "skip"}, {NonfinitePolicy::kStop, "stop"}});
  return names;
}

const FieldTable<GptOptions>& gpt_option_fields() {
  using O = GptOptions;
  static const FieldTable<O> table(
      "model",
      {
          number_field<O, int64_t>("num_layers", "decoder layers", {1, 1024},
                                   [](O& o) -> int64_t& { return o.num_layers; }),
          number_field<O, int64_t>("hidden_size", "model width", {1, 1 << 20},
                                   [](O& o) -> int64_t& { return o.hidden_size; }),
          number_field<O, int64_t>("num_attention_heads", "query heads", {1, 4096},
                                   [](O& o) -> int64_t& { return o.num_attention_heads; }),
          number_field<O, int64_t>("num_query_groups", "key/value heads (grouped-query attention)", {1, 4096},
                                   [](O& o) -> int64_t& { return o.num_query_groups; }),
          number_field<O, int64_t>("ffn_hidden_size", "SwiGLU width", {1, 1 << 22},
                                   [](O& o) -> int64_t& { return o.ffn_hidden_size; }),
          number_field<O, int64_t>("vocab_size", "vocabulary; 0: the tokenizer's", {0, 1 << 24},
                                   [](O& o) -> int64_t& { return o.vocab_size; }),
          number_field<O, double>("rotary_base", "rotary embedding base", {0, kInf, true},
                                  [](O& o) -> double& { return o.rotary_base; }),
          number_field<O, double>("norm_epsilon", "RMSNorm epsilon", {0, 1, true},
                                  [](O& o) -> double& { return o.norm_epsilon; }),
          number_field<O, double>("init_std", "normal init std (output projections / sqrt(2 x layers))", {0, 10, true},
                                  [](O& o) -> double& { return o.init_std; }),
          bool_field<O>("tie_embeddings", "output head shares the word embeddings",
                        [](O& o) -> bool& { return o.tie_embeddings; }),
          bool_field<O>("add_qkv_bias", "a bias on linear_qkv", [](O& o) -> bool& { return o.add_qkv_bias; }),
      },
      [](const O& o) {
        if (const std::string problem = gpt_shape_problem(o); !problem.empty()) throw InvalidArgument(problem);
      });
  return table;
}

const FieldTable<DataOptions>& data_option_fields() {
  using O = DataOptions;
  static const FieldTable<O> table(
      "data",
      {
          string_field<O>("train_prefix", "training .bin/.idx prefix",
                          [](O& o) -> std::string& { return o.train_prefix; }),
          string_field<O>("valid_prefix", "validation .bin/.idx prefix",
                          [](O& o) -> std::string& { return o.valid_prefix; }),
          choice_field<O>("tokenizer", "the tokenizer the data was made with", {"sentencepiece", "byte"},
                          [](O& o) -> std::string& { return o.tokenizer; }),
          string_field<O>("tokenizer_model", "SentencePiece .model (sentencepiece only)",
                          [](O& o) -> std::string& { return o.tokenizer_model; }),
          number_field<O, int64_t>("seq_length", "tokens per sample", {2, 1 << 20},
                                   [](O& o) -> int64_t& { return o.seq_length; }),
          number_field<O, int64_t>("seed", "sample shuffle seed", {0, kMaxInt},
                                   [](O& o) -> int64_t& { return o.seed; }),
          bool_field<O>("shuffle", "shuffle documents and samples per epoch", [](O& o) -> bool& { return o.shuffle; }),
      });
  return table;
}

const FieldTable<LrScheduleOptions>& lr_schedule_option_fields() {
  using O = LrScheduleOptions;
  static const FieldTable<O> table(
      "training.lr_schedule",
      {
          enum_field<O, LrScheduleKind>("kind", "constant | cosine | wsd (warmup-stable-decay)",
                                        lr_schedule_kind_names(), [](O& o) -> LrScheduleKind& { return o.kind; }),
          number_field<O, int64_t>("warmup", "linear warmup iterations", {0, kMaxInt},
                                   [](O& o) -> int64_t& { return o.warmup; }),
          number_field<O, double>("min_ratio", "final lr as a fraction of each group's lr", {0, 1},
                                  [](O& o) -> double& { return o.min_ratio; }),
          number_field<O, double>("decay_fraction", "wsd: fraction of iterations in the final linear decay",
                                  {0, 1, true}, [](O& o) -> double& { return o.decay_fraction; }),
      });
  return table;
}

const FieldTable<TrainingOptions>& training_option_fields() {
  using O = TrainingOptions;
  static const FieldTable<O> table(
      "training", {
                      number_field<O, int64_t>("micro_batch_size", "samples per rank per forward", {1, 1 << 20},
                                               [](O& o) -> int64_t& { return o.micro_batch_size; }),
                      number_field<O, int64_t>("gradient_accumulation", "micro batches per iteration", {1, 1 << 20},
                                               [](O& o) -> int64_t& { return o.gradient_accumulation; }),
                      number_field<O, int64_t>("train_iters", "optimizer steps", {0, kMaxInt},
                                               [](O& o) -> int64_t& { return o.train_iters; }),
                      number_field<O, int64_t>("seed", "model initialization seed", {0, kMaxInt},
                                               [](O& o) -> int64_t& { return o.seed; }),
                      number_field<O, double>("max_grad_norm", "global gradient-norm clip; 0: off", {0, kInf},
                                              [](O& o) -> double& { return o.max_grad_norm; }),
                      enum_field<O, NonfinitePolicy>(
                          "on_nonfinite", "NaN/Inf loss or gradient norm: skip the step or stop",
                          nonfinite_policy_names(), [](O& o) -> NonfinitePolicy& { return o.on_nonfinite; }),
                      number_field<O, int64_t>("eval_interval", "validation every N iterations; 0: only at the end",
                                               {0, kMaxInt}, [](O& o) -> int64_t& { return o.eval_interval; }),
                      number_field<O, int64_t>("eval_iters", "validation batches", {1, 1 << 20},
                                               [](O& o) -> int64_t& { return o.eval_iters; }),
                      number_field<O, int64_t>("threads", "intra-op threads per rank; 0: OMP_NUM_THREADS", {0, 4096},
                                               [](O& o) -> int64_t& { return o.threads; }),
                  });
  return table;
}

const FieldTable<SplitOptions>& split_option_fields() {
  using O = SplitOptions;
  static const FieldTable<O> table(
      "splits",
      {
          enum_field<O, SplitGranularity>("qkv", "none | qkv | per_head", split_granularity_names(),
                                          [](O& o) -> SplitGranularity& { return o.qkv; }),
          bool_field<O>("gate_up", "SwiGLU gate and up as separate matrices", [](O& o) -> bool& { return o.gate_up; }),
      });
  return table;
}

const FieldTable<ParallelOptions>& parallel_option_fields() {
  using O = ParallelOptions;
  static const FieldTable<O> table(
      "parallel",
      {
          number_field<O, int64_t>("tensor_parallel",
                                   "tensor-parallel size T (1: data parallel only); the world size must divide by T, "
                                   "and the data-parallel size is world / T",
                                   {1, 4096}, [](O& o) -> int64_t& { return o.tensor_parallel; }),
          choice_field<O>("device", "cpu (MPI) | cuda (NCCL, one GPU per rank)", {"cpu", "cuda"},
                          [](O& o) -> std::string& { return o.device; }),
          choice_field<O>("shard_layout",
                          "distributed Muon's data-parallel layout: auto (the one moving fewer bytes, from the plan) | "
                          "owner_aligned (A: matrices whole in their owner's shard) | element_wise (B: ZeRO-1's even "
                          "cut per bucket, Muon pieces sent to the owner and back)",
                          {"auto", "owner_aligned", "element_wise"},
                          [](O& o) -> std::string& { return o.shard_layout; }),
          number_field<O, int64_t>(
              "bucket_mb",
              "MiB of gradients per overlapped bucket of the reduce-scatter and all-gather (bitwise equal "
              "to one bucket; layout B cuts its shards by these buckets); 0: one bucket",
              {0, 1 << 20}, [](O& o) -> int64_t& { return o.bucket_mb; }),
          bool_field<O>("overlap_backward",
                        "start each gradient bucket's reduce-scatter during backward as soon as its gradients are "
                        "final (bitwise equal to reducing after backward)",
                        [](O& o) -> bool& { return o.overlap_backward; }),
      });
  return table;
}

const FieldTable<LoggingOptions>& logging_option_fields() {
  using O = LoggingOptions;
  static const FieldTable<O> table(
      "logging", {
                     number_field<O, int64_t>("log_interval", "a log line every N iterations", {1, kMaxInt},
                                              [](O& o) -> int64_t& { return o.log_interval; }),
                     string_field<O>("output_dir", "where log.txt, metrics.jsonl and config.yaml go",
                                     [](O& o) -> std::string& { return o.output_dir; }),
                     bool_field<O>("progress", "a progress line with ETA when stdout is a terminal",
                                   [](O& o) -> bool& { return o.progress; }),
                 });
  return table;
}

const FieldTable<CheckpointOptions>& checkpoint_option_fields() {
  using O = CheckpointOptions;
  static const FieldTable<O> table(
      "checkpoint",
      {
          string_field<O>("dir", "where iter_NNNNNNN/ checkpoint directories go; empty: no checkpoints",
                          [](O& o) -> std::string& { return o.dir; }),
          number_field<O, int64_t>("save_interval", "a checkpoint every N iterations; 0: no periodic saves",
                                   {0, kMaxInt}, [](O& o) -> int64_t& { return o.save_interval; }),
          bool_field<O>("save_at_end", "a checkpoint after the last iteration (when dir is set)",
                        [](O& o) -> bool& { return o.save_at_end; }),
          number_field<O, int64_t>("keep_last", "committed checkpoints kept, oldest removed first; 0: keep all",
                                   {0, kMaxInt}, [](O& o) -> int64_t& { return o.keep_last; }),
          bool_field<O>("async", "copy to host memory, write the shards in the background, commit later",
                        [](O& o) -> bool& { return o.async; }),
          string_field<O>("resume", "none | auto (newest valid checkpoint under dir) | a checkpoint directory",
                          [](O& o) -> std::string& { return o.resume; }),
          choice_field<O>("on_save_error", "a failed save: stop the run, or warn and train on", {"stop", "warn"},
                          [](O& o) -> std::string& { return o.on_save_error; }),
      },
      [](const O& o) {
        if (o.resume.empty()) throw InvalidArgument("resume must be none, auto or a checkpoint directory, got ''");
        if (o.resume == "auto" && o.dir.empty()) {
          throw InvalidArgument("resume: auto needs checkpoint.dir (the directory to search)");
        }
      });
  return table;
}

const std::vector<std::string>& engine_config_sections() {
  static const std::vector<std::string> sections = {"model",  "data",     "training", "optimizer",
                                                    "splits", "parallel", "logging",  "checkpoint"};
  return sections;
}

EngineConfig load_engine_config(const std::string& path, const std::vector<std::string>& overrides) {
  YAML::Node root = load_yaml_file(path);
  const auto origins = apply_yaml_overrides(root, overrides);
  const YamlSection top(root, path, "", origins);
  top.check_keys(engine_config_sections());
  EngineConfig c;
  c.source = path;
  c.overrides = overrides;
  c.model = gpt_option_fields().parse_yaml(top.child("model"), GptOptions{});
  c.data = data_option_fields().parse_yaml(top.child("data"), DataOptions{});
  const YamlSection training = top.child("training");
  c.training = training_option_fields().parse_yaml(training, TrainingOptions{}, {"lr_schedule"});
  c.training.lr_schedule = lr_schedule_option_fields().parse_yaml(training.child("lr_schedule"), LrScheduleOptions{});
  if (c.training.lr_schedule.warmup > c.training.train_iters) {
    throw ConfigError(training.child("lr_schedule").where("warmup") + ": training.lr_schedule.warmup (" +
                      std::to_string(c.training.lr_schedule.warmup) + ") exceeds training.train_iters (" +
                      std::to_string(c.training.train_iters) + ")");
  }
  c.optimizer = parse_optimizer_config(top.child("optimizer"));
  c.splits = split_option_fields().parse_yaml(top.child("splits"), SplitOptions{});
  c.parallel = parallel_option_fields().parse_yaml(top.child("parallel"), ParallelOptions{});
  c.logging = logging_option_fields().parse_yaml(top.child("logging"), LoggingOptions{});
  c.checkpoint = checkpoint_option_fields().parse_yaml(top.child("checkpoint"), CheckpointOptions{});
  c.model.qkv_split = c.splits.qkv;
  c.model.max_seq_length = c.data.seq_length;
  return c;
}

std::string engine_config_to_yaml(const EngineConfig& c) {
  YAML::Emitter out;
  out << YAML::BeginMap;
  emit_section(out, "model", gpt_option_fields(), c.model);
  emit_section(out, "data", data_option_fields(), c.data);
  out << YAML::Key << "training" << YAML::Value << YAML::BeginMap;
  training_option_fields().emit_yaml(out, c.training);
  emit_section(out, "lr_schedule", lr_schedule_option_fields(), c.training.lr_schedule);
  out << YAML::EndMap;
  emit_section(out, "splits", split_option_fields(), c.splits);
  emit_section(out, "parallel", parallel_option_fields(), c.parallel);
  emit_section(out, "logging", logging_option_fields(), c.logging);
  emit_section(out, "checkpoint", checkpoint_option_fields(), c.checkpoint);
  out << YAML::EndMap;
  // The optimizer section has its own emitter; append it as the document's last section.
  return std::string(out.c_str()) + "\n" + optimizer_config_to_yaml(c.optimizer) + "\n";
}

std::string expand_path(const std::string& text, const std::string& key) {
  auto env = [&](const std::string& name) -> std::string {
    if (const char* v = std::getenv(name.c_str()); v && *v) return v;
    if (name == "ORTHOTRON_CACHE") return expand_path("~/.cache/orthotron", key);
    if (name == "ORTHOTRON_DATA") return expand_path("${ORTHOTRON_CACHE}/data", key);
    throw ConfigError(key + ": '" + text + "' uses ${" + name + "}, which is not set in the environment");
  };
  std::string out;
  size_t i = 0;
  if (text.rfind("~/", 0) == 0 || text == "~") {
    out = env("HOME");
    i = 1;
  }
  while (i < text.size()) {
    if (text.compare(i, 2, "${") == 0) {
      const size_t close = text.find('}', i);
      if (close == std::string::npos) throw ConfigError(key + ": unclosed '${' in '" + text + "'");
      out += env(text.substr(i + 2, close - i - 2));
      i = close + 1;
    } else {
      out += text[i++];
    }
  }
  return out;
}

}  // namespace orthotron
