// trainer.h: GPT pretraining, data parallel over every rank: the model, the distributed
// MuonWithAdamW, the datasets and the loop (micro batches with gradient accumulation, the
// learning-rate schedule over every group, global gradient-norm clipping, NaN/Inf handling,
// validation, logging, sharded checkpoints: save every checkpoint.save_interval iterations and at
// the end, resume from checkpoint.resume). Global batch = micro_batch_size x gradient_accumulation x data-parallel
// size.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include "engine/checkpoint/checkpoint.h"
#include "engine/config/engine_config.h"
#include "engine/data/gpt_samples.h"
#include "engine/data/indexed_dataset.h"
#include "engine/model/gpt_model.h"
#include "engine/train/gradient_ready_hooks.h"
#include "engine/train/metrics_log.h"
#include "optim/distributed_muon_with_adamw.h"
#include "parallel/communicator.h"
#include "parallel/process_grid.h"

namespace orthotron {

struct TrainSummary {
  int64_t iterations = 0;
  int64_t consumed_samples = 0;
  int64_t tokens = 0;
  double first_val_loss = 0;  ///< the validation loss before the first step
  double final_val_loss = 0;
  double final_train_loss = 0;
  int64_t skipped = 0;
  int64_t nan = 0;
  double seconds = 0;  ///< the training loop's wall time (validation excluded)
  double optimizer_seconds = 0;
  double buckets_in_backward = 0;  ///< gradient buckets whose reduce-scatter started during backward, mean per step
};

class Trainer {
 public:
  /// Collective over `world` (every rank, the same config). Opens the datasets (FormatError naming
  /// a missing or corrupt file), builds the model (seeded: every rank the same) and the optimizer,
  /// and on rank 0 the outputs (the resolved config to <output_dir>/config.yaml). Then resumes per
  /// checkpoint.resume: `auto` loads the newest checkpoint under checkpoint.dir that verifies
  /// (skipping, with a logged warning, incomplete or damaged ones; none: a fresh start), a path
  /// loads that checkpoint (FormatError when it is incomplete or damaged). `world` must outlive the
  /// trainer.
  Trainer(EngineConfig config, Communicator& world);
  ~Trainer();

  /// Runs from the resumed iteration (0 on a fresh start) to training.train_iters with validation before the first,
  /// every eval_interval and after the last. Collective. Error (every rank) for a non-finite loss or gradient norm
  /// under on_nonfinite: stop. For tests, ORTHOTRON_FAULT_NAN_LOSS_AT=N makes the last rank report
  /// a NaN loss at iteration N.
  TrainSummary train();

  /// Mean validation loss over eval_iters global batches of the held-out split (the same samples
  /// every call). Collective.
  double evaluate();

  const GptModel& model() const { return *model_; }
  DistributedMuonWithAdamW& optimizer() { return *optimizer_; }
  int64_t global_batch() const;
  /// The iteration training continues from (the resumed checkpoint's; 0 on a fresh start).
  int64_t start_iteration() const { return resumed_.iteration; }

 private:
  /// The loss of one iteration's micro batches on this rank (mean), gradients accumulated.
  double forward_backward(int64_t consumed);
  /// tokens [micro_batch, seq_length + 1] of micro-step k of the iteration starting at `consumed`.
  at::Tensor micro_batch(const GptSamples& samples, int64_t consumed, int64_t k) const;
  void set_learning_rates(int64_t iteration);
  void log(const std::string& text);
  /// Resumes per checkpoint.resume (collective).
  void resume();
  /// Saves the checkpoint of iteration `it` (collective); returns the seconds training was blocked.
  /// A failed save throws FormatError on every rank, or under checkpoint.on_save_error: warn is
  /// logged and training goes on.
  /// With checkpoint.async the save only starts (host copy; the previous async save commits first)
  /// and finish_pending_save commits it later.
  double save(int64_t it, int64_t consumed, const TrainSummary& sum);
  /// Collective. Commits the async save in flight (none: returns 0), waiting for the writes; with
  /// only_if_ready, only when every rank's write is done (a cheap check otherwise). Failures as in
  /// save. Returns the seconds training was held.
  double finish_pending_save(bool only_if_ready = false);
  /// Logs a committed save and records it in metrics.jsonl.
  void report_save(int64_t it, const SaveResult& r);

  EngineConfig config_;
  Communicator& world_;
  bool lead_;
  std::unique_ptr<ProcessGrid> grid_;  ///< TP x DP over world_ (parallel.tensor_parallel)
  Communicator& dp() const { return grid_->dp(); }
  std::unique_ptr<IndexedDataset> train_data_, valid_data_;
  std::unique_ptr<GptSamples> train_samples_, valid_samples_;
  std::unique_ptr<GptModel> model_;
  std::unique_ptr<DistributedMuonWithAdamW> optimizer_;
  std::unique_ptr<GradientReadyHooks> gradient_hooks_;  ///< parallel.overlap_backward
  std::unique_ptr<MetricsLog> log_;
  std::map<std::string, double> base_lr_;
  std::map<std::string, double> current_lr_;
  std::unique_ptr<AsyncSave> pending_save_;  ///< an async save not committed yet (checkpoint.async)
  CheckpointProgress resumed_;               ///< what the resumed checkpoint recorded (zeros on a fresh start)
  int64_t fault_nan_iteration_ = -1;         ///< ORTHOTRON_FAULT_NAN_LOSS_AT (tests): a NaN loss at this iteration
};

}  // namespace orthotron
