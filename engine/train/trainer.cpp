// trainer.cpp: the pretraining loop.
#include "engine/train/trainer.h"

#include <ATen/Parallel.h>
#include <c10/core/GradMode.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>

#include "base/errors.h"
#include "base/intra_op_threads.h"
#include "engine/data/tokenizer.h"
#include "engine/train/lr_schedule.h"

namespace orthotron {

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

/// The splits the config asks for: the model's fused QKV split at splits.qkv and gate/up unless
/// turned off, for the parameters the routing sends to a Muon group (a fused weight a rule sends to
/// AdamW is updated element-wise, where a split means nothing; routing everything to AdamW is how
/// the AdamW baseline runs).
SplitRegistry configured_splits(const GptModel& model, const SplitOptions& options, const OptimizerConfig& optimizer) {
  std::set<std::string> on_muon;
  std::vector<ParamShape> shapes = logical_shapes(model.parameters());  // TP pieces: routed by the whole shape
  const TensorParallelLayout layout = model.tp_layout();
  for (auto& s : shapes) s.shape = tp_logical_shape(s.name, s.shape, layout.of(s.name), layout.size);
  for (const auto& a : route_parameters(shapes, optimizer.groups, optimizer.rules)) {
    if (optimizer.groups[a.group_index].algorithm == Algorithm::kMuon) on_muon.insert(a.param);
  }
  const SplitRegistry all = model.splits();
  SplitRegistry out;
  for (const auto& [name, split] : all.all()) {
    if (!options.gate_up && name.find("linear_fc1") != std::string::npos) continue;
    if (on_muon.count(name)) out.add(name, split);
  }
  return out;
}

std::unique_ptr<IndexedDataset> open_dataset(const std::string& prefix, const std::string& key) {
  const std::string path = expand_path(prefix, key);
  try {
    return std::make_unique<IndexedDataset>(path);
  } catch (const Error& e) {
    throw FormatError(key + " '" + path + "': " + e.what() +
                      " (run launch/prepare_data.sh to build the bundled dataset, or point " + key +
                      " at a Megatron .bin/.idx prefix)");
  }
}

}  // namespace

Trainer::Trainer(EngineConfig config, Communicator& world)
    : config_(std::move(config)), world_(world), lead_(world.rank() == 0) {
  if (config_.training.threads > 0) at::set_num_threads(static_cast<int>(config_.training.threads));
  // Fault injection for tests: the last rank reports a NaN loss at this iteration.
  if (const char* at_iter = std::getenv("ORTHOTRON_FAULT_NAN_LOSS_AT"); at_iter && *at_iter) {
    fault_nan_iteration_ = std::atoll(at_iter);
  }
  if (config_.parallel.device != "cpu") {
    throw ConfigError(config_.source + ": parallel.device '" + config_.parallel.device +
                      "' is not wired into the engine yet; use cpu");
  }
  const int tp = static_cast<int>(config_.parallel.tensor_parallel);
  if (world_.size() % tp != 0) {
    throw ConfigError(config_.source + ": parallel.tensor_parallel = " + std::to_string(tp) +
                      " does not divide the world size " + std::to_string(world_.size()) +
                      " (the data-parallel size is world / tensor_parallel)");
  }
  grid_ = std::make_unique<ProcessGrid>(world_, tp);
  // Vocabulary: the tokenizer's unless the model names one; it must cover the tokenizer's ids.
  const std::string tokenizer_model =
      config_.data.tokenizer == "byte" ? "" : expand_path(config_.data.tokenizer_model, "data.tokenizer_model");
  const int64_t vocab = make_tokenizer(config_.data.tokenizer, tokenizer_model)->vocab_size();
  if (config_.model.vocab_size == 0) config_.model.vocab_size = vocab;
  if (config_.model.vocab_size < vocab) {
    throw ConfigError(config_.source + ": model.vocab_size (" + std::to_string(config_.model.vocab_size) +
                      ") is smaller than the tokenizer's vocabulary (" + std::to_string(vocab) + ")");
  }
  train_data_ = open_dataset(config_.data.train_prefix, "data.train_prefix");
  valid_data_ = open_dataset(config_.data.valid_prefix, "data.valid_prefix");
  const auto seed = static_cast<uint64_t>(config_.data.seed);
  train_samples_ = std::make_unique<GptSamples>(*train_data_, config_.data.seq_length, seed, config_.data.shuffle);
  valid_samples_ = std::make_unique<GptSamples>(*valid_data_, config_.data.seq_length, seed, config_.data.shuffle);

  model_ =
      std::make_unique<GptModel>(config_.model, static_cast<uint64_t>(config_.training.seed), at::kCPU, &grid_->tp());
  optimizer_ = std::make_unique<DistributedMuonWithAdamW>(
      model_->parameters(), dp(), config_.optimizer.groups, config_.optimizer.rules,
      configured_splits(*model_, config_.splits, config_.optimizer),
      TensorParallelContext{tp > 1 ? &grid_->tp() : nullptr, model_->tp_layout()}, config_.parallel.shard_layout);
  optimizer_->set_max_grad_norm(config_.training.max_grad_norm);
  optimizer_->set_bucket_bytes(config_.parallel.bucket_mb << 20);
  if (config_.parallel.overlap_backward) gradient_hooks_ = std::make_unique<GradientReadyHooks>(*optimizer_);
  for (const auto& g : config_.optimizer.groups) {
    base_lr_[g.name] = g.algorithm == Algorithm::kMuon ? g.muon.lr : g.adamw.lr;
  }
  if (lead_) {
    log_ = std::make_unique<MetricsLog>(config_.logging.output_dir, config_.logging.progress);
    const std::string resolved = engine_config_to_yaml(config_);
    log_->write_file("config.yaml", resolved);
    log_->line("orthotron_pretrain: " + std::to_string(world_.size()) + " rank(s): tensor-parallel " +
               std::to_string(tp) + " x data-parallel " + std::to_string(dp().size()) + ", " +
               std::to_string(at::get_num_threads()) + " thread(s) each; config " + config_.source);
    if (const int reached = intra_op_threads_reached(); reached < at::get_num_threads()) {
      log_->line("warning: orthotron's parallel loops reach " + std::to_string(reached) + " of " +
                 std::to_string(at::get_num_threads()) + " threads (built without OpenMP?)");
    }
    log_->line("resolved configuration:\n" + resolved);
    log_->line("model: " + std::to_string(model_->num_parameters()) + " parameters, vocabulary " +
               std::to_string(config_.model.vocab_size) + "; train " + std::to_string(train_data_->num_documents()) +
               " documents, " + std::to_string(train_data_->total_tokens()) + " tokens (" +
               std::to_string(train_samples_->samples_per_epoch()) + " samples per epoch); validation " +
               std::to_string(valid_data_->total_tokens()) + " tokens");
    log_->line("parameter assignment:\n" + optimizer_->assignment_table() + "\n" + optimizer_->grid_plan().summary());
    std::string when;
    if (config_.parallel.overlap_backward) {
      const std::vector<double> share = backward_start_shares(optimizer_->plan(), optimizer_->bucket_layout());
      char buf[200];
      std::snprintf(buf, sizeof buf,
                    "; reduce-scatters start during backward: the first once %.1f%% of the parameters have their "
                    "gradients (in reverse parameter order), half of them by %.1f%%",
                    100 * share.front(), 100 * share[share.size() / 2]);
      when = buf;
    }
    log_->line("gradient reduce-scatter and parameter all-gather: " + std::to_string(optimizer_->buckets()) +
               " overlapped bucket(s) (parallel.bucket_mb " + std::to_string(config_.parallel.bucket_mb) + ")" + when);
  }
  resume();
}

void Trainer::resume() {
  const CheckpointOptions& c = config_.checkpoint;
  if (c.resume == "none") return;
  const auto start = Clock::now();
  std::string path;
  if (c.resume == "auto") {
    const std::string root = expand_path(c.dir, "checkpoint.dir");
    std::vector<std::string> warnings;
    const bool found = load_latest_checkpoint(root, *optimizer_, resumed_, path, warnings);
    for (const auto& w : warnings) log("[orthotron] warning: " + w);
    if (!found) {
      log("[orthotron] checkpoint.resume: auto found no usable checkpoint under '" + root + "'; starting fresh");
      return;
    }
  } else {
    path = expand_path(c.resume, "checkpoint.resume");
    resumed_ = load_checkpoint(path, *optimizer_);
  }
  char buf[160];
  std::snprintf(buf, sizeof buf, " at iteration %lld, %lld consumed samples, in %.3f s",
                static_cast<long long>(resumed_.iteration), static_cast<long long>(resumed_.consumed_samples),
                seconds_since(start));
  log("[orthotron] resumed from checkpoint '" + path + "'" + buf + "; parameters bitwise equal on every rank; " +
      (resumed_.rng_restored ? "RNG states restored"
                             : "RNG states not restored (saved on another grid; no training step draws "
                               "random numbers)"));
  const LoadReport& r = resumed_.state_load;
  if (!r.complete() || !r.changed_hyperparameters.empty() || !r.converted.empty()) {
    log("[orthotron] optimizer state: " + r.to_string());
  }
}

double Trainer::save(int64_t it, int64_t consumed, const TrainSummary& sum) {
  const auto& lr = config_.training.lr_schedule;
  nlohmann::json schedule = {{"kind", lr_schedule_kind_names().name(lr.kind)},
                             {"warmup", lr.warmup},
                             {"min_ratio", lr.min_ratio},
                             {"decay_fraction", lr.decay_fraction},
                             {"train_iters", config_.training.train_iters},
                             {"factor", lr_factor(lr, it, config_.training.train_iters)},
                             {"lr", current_lr_}};
  CheckpointProgress p;
  p.iteration = it;
  p.consumed_samples = consumed;
  p.skipped = sum.skipped;
  p.nan = sum.nan;
  p.lr_schedule = schedule.dump();
  const auto start = Clock::now();
  const std::string root = expand_path(config_.checkpoint.dir, "checkpoint.dir");
  if (config_.checkpoint.async) {
    finish_pending_save();  // one save in flight at a time: the previous one commits first
    pending_save_ =
        std::make_unique<AsyncSave>(root, p, *optimizer_, engine_config_to_yaml(config_), config_.checkpoint.keep_last);
    char buf[128];
    std::snprintf(buf, sizeof buf, " (training blocked %.1f ms for the host copy)",
                  1000.0 * pending_save_->blocked_seconds());
    log(" async save of iteration " + std::to_string(it) + " started" + buf);
    return seconds_since(start);
  }
  SaveResult r;
  try {
    r = save_checkpoint(root, p, *optimizer_, engine_config_to_yaml(config_), config_.checkpoint.keep_last);
  } catch (const FormatError& e) {  // every rank throws it (save_checkpoint agrees on the outcome)
    if (config_.checkpoint.on_save_error != "warn") throw;
    log(std::string("[orthotron] warning: ") + e.what() + "; training goes on (checkpoint.on_save_error: warn)");
    return seconds_since(start);
  }
  report_save(it, r);
  return r.seconds;
}

void Trainer::report_save(int64_t it, const SaveResult& r) {
  char buf[256];
  std::snprintf(buf, sizeof buf, " in %.1f ms (training blocked %.1f ms); %llu bytes on rank 0; %lld old removed",
                1000.0 * r.seconds, 1000.0 * r.blocked_seconds, static_cast<unsigned long long>(r.bytes),
                static_cast<long long>(r.removed));
  log(" saved checkpoint '" + r.path + "' at iteration " + std::to_string(it) + buf);
  if (log_)
    log_->record({{"kind", "checkpoint"},
                  {"iteration", it},
                  {"path", r.path},
                  {"async", config_.checkpoint.async},
                  {"blocked_ms", 1000.0 * r.blocked_seconds},
                  {"total_ms", 1000.0 * r.seconds},
                  {"bytes_rank0", r.bytes}});
}

double Trainer::finish_pending_save(bool only_if_ready) {
  if (!pending_save_) return 0;
  const auto start = Clock::now();
  if (only_if_ready && !pending_save_->ready()) return seconds_since(start);
  std::unique_ptr<AsyncSave> save = std::move(pending_save_);
  try {
    report_save(save->iteration(), save->finish());
  } catch (const FormatError& e) {  // every rank throws it (the commit agrees on the outcome)
    if (config_.checkpoint.on_save_error != "warn") throw;
    log(std::string("[orthotron] warning: ") + e.what() + "; training goes on (checkpoint.on_save_error: warn)");
  }
  return seconds_since(start);
}

Trainer::~Trainer() = default;

int64_t Trainer::global_batch() const {
  return config_.training.micro_batch_size * config_.training.gradient_accumulation * dp().size();
}

void Trainer::log(const std::string& text) {
  if (log_) log_->line(text);
}

at::Tensor Trainer::micro_batch(const GptSamples& samples, int64_t consumed, int64_t k) const {
  const auto& t = config_.training;
  const std::vector<int64_t> indices =
      micro_batch_indices(consumed, t.micro_batch_size, t.gradient_accumulation, dp().size(), dp().rank(), k);
  const int64_t width = config_.data.seq_length + 1;
  at::Tensor tokens = at::empty({static_cast<int64_t>(indices.size()), width}, at::kLong);
  int64_t* out = tokens.data_ptr<int64_t>();
  for (size_t i = 0; i < indices.size(); ++i) samples.sample(indices[i], out + static_cast<int64_t>(i) * width);
  return tokens;
}

double Trainer::forward_backward(int64_t consumed) {
  const int64_t accumulation = config_.training.gradient_accumulation;
  const int64_t s = config_.data.seq_length;
  double loss_sum = 0;
  for (int64_t k = 0; k < accumulation; ++k) {
    const at::Tensor tokens = micro_batch(*train_samples_, consumed, k);
    const at::Tensor loss = model_->loss(tokens.narrow(1, 0, s), tokens.narrow(1, 1, s));
    // The last micro-batch's backward starts the gradient reduce-scatters bucket by bucket.
    if (gradient_hooks_ && k == accumulation - 1) optimizer_->begin_backward_reduction();
    (loss / static_cast<double>(accumulation)).backward();
    loss_sum += loss.item<double>();
  }
  optimizer_->end_backward_reduction();  // before the loss all-reduce: the same collective order on every rank
  return loss_sum / static_cast<double>(accumulation);
}

void Trainer::set_learning_rates(int64_t iteration) {
  const double factor = lr_factor(config_.training.lr_schedule, iteration, config_.training.train_iters);
  for (const auto& [name, base] : base_lr_) {
    ParamGroup& g = optimizer_->group(name);
    (g.algorithm == Algorithm::kMuon ? g.muon.lr : g.adamw.lr) = base * factor;
    current_lr_[name] = base * factor;
  }
}

double Trainer::evaluate() {
  c10::NoGradGuard no_grad;
  const int64_t s = config_.data.seq_length;
  double sum = 0;
  int64_t count = 0;
  for (int64_t j = 0; j < config_.training.eval_iters; ++j) {
    for (int64_t k = 0; k < config_.training.gradient_accumulation; ++k) {
      const at::Tensor tokens = micro_batch(*valid_samples_, j * global_batch(), k);
      sum += model_->loss(tokens.narrow(1, 0, s), tokens.narrow(1, 1, s)).item<double>();
      ++count;
    }
  }
  at::Tensor mean = at::full({1}, sum / static_cast<double>(count), at::kDouble);
  dp().all_reduce(mean, ReduceOp::kAvg);  // the TP ranks of a DP group hold the same loss
  return mean.item<double>();
}

TrainSummary Trainer::train() {
  const TrainingOptions& t = config_.training;
  const int64_t gb = global_batch();
  const int64_t seq = config_.data.seq_length;
  TrainSummary sum;
  auto validate = [&](int64_t iteration) {
    const double v = evaluate();
    char buf[256];
    std::snprintf(buf, sizeof buf, " validation loss at iteration %lld | lm loss value: %.6E | lm loss PPL: %.6E |",
                  static_cast<long long>(iteration), v, std::exp(std::min(v, 700.0)));
    log(buf);
    if (log_)
      log_->record(
          {{"kind", "validation"}, {"iteration", iteration}, {"tokens", iteration * gb * seq}, {"val_loss", v}});
    return v;
  };
  const int64_t first = resumed_.iteration;
  sum.skipped = resumed_.skipped;
  sum.nan = resumed_.nan;
  sum.first_val_loss = validate(first);
  sum.final_val_loss = sum.first_val_loss;

  const auto start = Clock::now();
  auto window_start = start;
  double buckets_in_backward = 0;
  int64_t steps_run = 0;
  double window_optimizer = 0;
  int64_t window_iters = 0;
  double window_loss = 0;
  int64_t window_loss_count = 0;
  double eval_seconds = 0;
  int64_t consumed = resumed_.consumed_samples;
  const bool saving = !config_.checkpoint.dir.empty();
  // Resumed exactly at the last iteration: the end save happens right away (e.g. to rewrite a
  // checkpoint at another data-parallel size).
  if (saving && first > 0 && first == t.train_iters && config_.checkpoint.save_at_end) save(first, consumed, sum);
  for (int64_t it = first + 1; it <= t.train_iters; ++it) {
    set_learning_rates(it);
    optimizer_->zero_grad();
    double local_loss = forward_backward(consumed);
    if (it == fault_nan_iteration_ && world_.rank() == world_.size() - 1) {
      local_loss = std::numeric_limits<double>::quiet_NaN();
    }
    at::Tensor loss_t = at::full({1}, local_loss, at::kDouble);
    dp().all_reduce(loss_t, ReduceOp::kAvg);  // a NaN on any rank of the DP group makes it NaN on each
    double loss = loss_t.item<double>();
    if (grid_->shape().tp > 1) {  // and across the TP group (whose ranks otherwise hold the same loss)
      at::Tensor bad = at::full({1}, std::isfinite(loss) ? int64_t{0} : int64_t{1}, at::kLong);
      grid_->tp().all_reduce(bad, ReduceOp::kMax);
      if (bad.item<int64_t>() != 0) loss = std::numeric_limits<double>::quiet_NaN();
    }
    const auto opt_start = Clock::now();
    bool nonfinite = !std::isfinite(loss);
    if (!nonfinite) {
      optimizer_->step();
      nonfinite = optimizer_->last_step_skipped();
      buckets_in_backward += optimizer_->last_step_times().buckets_in_backward;
      ++steps_run;
    } else {
      optimizer_->discard_backward_reduction();
    }
    const double opt_seconds = seconds_since(opt_start);
    if (nonfinite) {
      ++sum.skipped;
      ++sum.nan;
      if (t.on_nonfinite == NonfinitePolicy::kStop) {
        throw Error("iteration " + std::to_string(it) + ": the loss (" + std::to_string(loss) +
                    ") or the gradient norm (" + std::to_string(optimizer_->last_grad_norm()) +
                    ") is not finite; stopping (training.on_nonfinite: stop; 'skip' would skip the step)");
      }
    } else {
      window_loss += loss;
      ++window_loss_count;
      sum.final_train_loss = loss;
    }
    consumed += gb;
    sum.optimizer_seconds += opt_seconds;
    window_optimizer += opt_seconds;
    ++window_iters;
    const double elapsed = seconds_since(start) - eval_seconds;
    const double eta = elapsed / static_cast<double>(it - first) * static_cast<double>(t.train_iters - it);
    if (it % config_.logging.log_interval == 0 || it == t.train_iters) {
      const double window = seconds_since(window_start);
      IterationRecord r;
      r.iteration = it;
      r.train_iters = t.train_iters;
      r.consumed_samples = consumed;
      r.tokens = consumed * seq;
      r.global_batch = gb;
      r.ms_per_iteration = 1000.0 * window / static_cast<double>(window_iters);
      r.optimizer_ms = 1000.0 * window_optimizer / static_cast<double>(window_iters);
      r.tokens_per_second = static_cast<double>(window_iters * gb * seq) / window;
      r.lr = current_lr_;
      r.loss = window_loss_count ? window_loss / static_cast<double>(window_loss_count)
                                 : std::numeric_limits<double>::quiet_NaN();
      r.grad_norm = optimizer_->last_grad_norm();
      r.skipped = sum.skipped;
      r.nan = sum.nan;
      r.eta_seconds = eta;
      if (log_) log_->iteration(r);
      window_start = Clock::now();
      window_optimizer = 0;
      window_iters = 0;
      window_loss = 0;
      window_loss_count = 0;
    } else if (log_) {
      log_->progress(it, t.train_iters, eta);
    }
    if ((t.eval_interval > 0 && it % t.eval_interval == 0) || it == t.train_iters) {
      const auto eval_start = Clock::now();
      sum.final_val_loss = validate(it);
      eval_seconds += seconds_since(eval_start);
      window_start = Clock::now();
    }
    // An async save in flight commits once every rank's write is done (one 1-element all_reduce).
    if (pending_save_) eval_seconds += finish_pending_save(true);
    const bool periodic = config_.checkpoint.save_interval > 0 && it % config_.checkpoint.save_interval == 0;
    if (saving && (periodic || (it == t.train_iters && config_.checkpoint.save_at_end))) {
      eval_seconds += save(it, consumed, sum);  // excluded from the iteration timings like validation
      window_start = Clock::now();
    }
  }
  eval_seconds += finish_pending_save();  // the end of training waits for the last async save's commit
  sum.iterations = t.train_iters - first;
  sum.consumed_samples = consumed;
  sum.tokens = (consumed - resumed_.consumed_samples) * seq;  // trained by this run
  sum.seconds = seconds_since(start) - eval_seconds;
  sum.buckets_in_backward = steps_run > 0 ? buckets_in_backward / static_cast<double>(steps_run) : 0.0;
  if (log_) {
    char buf[512];
    std::snprintf(buf, sizeof buf,
                  "[orthotron] done: %lld iterations, %lld tokens in %.1f s (%.0f tokens/s; optimizer %.1f%% of the "
                  "step time; %.1f of %lld gradient bucket(s) reduced during backward); validation loss %.4f -> "
                  "%.4f; skipped %lld iteration(s)",
                  static_cast<long long>(sum.iterations), static_cast<long long>(sum.tokens), sum.seconds,
                  sum.seconds > 0 ? static_cast<double>(sum.tokens) / sum.seconds : 0.0,
                  sum.seconds > 0 ? 100.0 * sum.optimizer_seconds / sum.seconds : 0.0, sum.buckets_in_backward,
                  static_cast<long long>(optimizer_->buckets()), sum.first_val_loss, sum.final_val_loss,
                  static_cast<long long>(sum.skipped));
    log(buf);
    log("[orthotron] outputs: " + log_->output_dir() + "/log.txt, " + log_->output_dir() + "/metrics.jsonl, " +
        log_->output_dir() + "/config.yaml");
    log_->record({{"kind", "summary"},
                  {"iterations", sum.iterations},
                  {"tokens", sum.tokens},
                  {"seconds", sum.seconds},
                  {"optimizer_seconds", sum.optimizer_seconds},
                  {"buckets", optimizer_->buckets()},
                  {"buckets_in_backward", sum.buckets_in_backward},
                  {"first_val_loss", sum.first_val_loss},
                  {"final_val_loss", sum.final_val_loss},
                  {"skipped", sum.skipped},
                  {"ranks", world_.size()},
                  {"tensor_parallel", grid_->shape().tp}});
  }
  return sum;
}

}  // namespace orthotron
