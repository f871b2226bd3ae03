// checkpoint.h: sharded checkpoints of a training run on a TP x DP grid (tensor-parallel size 1: a
// data-parallel run), one directory per saved iteration (<root>/iter_0000040/): every rank writes
// its own safetensors shard, numbered by grid rank tp_rank + dp_rank x TP
// (rank00000-of-00004.safetensors), with the parameters and optimizer state it holds under the
// owner-aligned layout (its TP pieces, laid out over DP), keyed by parameter name ("model/<name>",
// "muon/<name>/momentum", "adamw/<name>/exp_avg", ...), so no tensor is written twice; rank 0 writes manifest.json
// (format version, world size and tensor-parallel size, plan hash and layout record, splits, every rank's RNG state,
// every shard's size and CRC-32 and every tensor's CRC-32, the resolved config, iteration, consumed samples, lr
// schedule). Commit protocol: shards go into <root>/iter_0000040.tmp.<save id>/, each fsynced; barrier; rank 0 writes
// and fsyncs the manifest, renames the directory to its final name, fsyncs <root>, writes <root>/latest atomically, and
// removes checkpoints beyond keep_last. A directory is committed exactly when it has its final name (and then it has
// its manifest). `latest` names the newest save for people and tools; resuming scans the directory instead, so a stale
// tracker cannot mislead it. Same grid, or another data-parallel size, tensor-parallel size or both
// (resharding, reshard.h: each rank reads the old shards it now needs). Async save (AsyncSave): the host copy blocks
// training; a background thread writes and fsyncs the shard (no communication there); the commit above runs later on
// the main thread. The manifest holds every rank's default CPU generator state; a same-grid load restores each rank's
// own, a resharded load none (rank r of the new job is not rank r of the old; the engine draws no random numbers after
// initialization, so training does not depend on it). Every collective here runs over the whole grid (grid_comm.h).
// Depends on optim/, parallel/, base/.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "engine/checkpoint/grid_comm.h"
#include "optim/distributed_muon_with_adamw.h"
#include "parallel/communicator.h"

namespace orthotron {

/// 2: layout A's shards in backward order and owners spread over depth (the layout record of a
/// version-1 checkpoint names plans this build no longer computes, so it is refused by version).
/// 3: layout B cut bucket by bucket in backward order (element_plan.h); its layout record names the
/// bucket size. A version-2 checkpoint of layout A is still read (its plan is unchanged since).
constexpr int kCheckpointFormatVersion = 3;
constexpr int kOwnerAlignedSinceVersion = 2;

/// What a checkpoint records about the run besides the model and optimizer.
struct CheckpointProgress {
  int64_t iteration = 0;         ///< iterations completed
  int64_t consumed_samples = 0;  ///< global samples consumed (the data position)
  int64_t skipped = 0;           ///< skipped iterations so far
  int64_t nan = 0;               ///< non-finite iterations so far
  std::string lr_schedule;  ///< the lr schedule (JSON text; informational: the schedule is a function of iteration)
  // Set by a load, not saved:
  bool rng_restored = false;  ///< each rank's CPU generator state restored (same grid only)
  LoadReport state_load;      ///< the optimizer-state load's report (dtype conversions, changed hyperparameters)
};

struct SaveResult {
  std::string path;            ///< the committed directory
  uint64_t bytes = 0;          ///< this rank's shard size
  double seconds = 0;          ///< wall time of the whole save on this rank, from its start to the commit
  double blocked_seconds = 0;  ///< training was blocked this long (== seconds for a synchronous save)
  int64_t removed = 0;         ///< old checkpoints removed under keep_last (rank 0's count)
};

/// "iter_0000040".
std::string checkpoint_name(int64_t iteration);
/// "rank00001-of-00004.safetensors".
std::string shard_file_name(int rank, int world);

/// Collective over the grid (opt.comm() and opt.tp_comm()): every rank must call it with the same arguments. Writes and
/// commits the checkpoint of `progress.iteration` under `root` (created if missing) as described above; an existing
/// committed directory of the same iteration is replaced. `config_yaml` is the resolved config stored in the manifest.
/// keep_last > 0 removes the oldest committed checkpoints beyond the newest keep_last (never the one just written) and
/// leftover temporary directories of earlier saves. Any failure on any rank (unwritable directory, full disk) makes
/// every rank throw FormatError naming the path and the rank; the temporary directory is removed and the previous
/// checkpoints are untouched. Blocking.
SaveResult save_checkpoint(const std::string& root, const CheckpointProgress& progress,
                           const DistributedMuonWithAdamW& opt, const std::string& config_yaml, int64_t keep_last);

struct SaveJob;  ///< one save's identity, paths, host copies and outcome (checkpoint.cpp)

/// An asynchronous save_checkpoint. Construction is collective (same arguments on every rank): it
/// copies this rank's parameter shard and optimizer state to host memory (blocking: that is the time
/// training is blocked) and starts a background thread that serializes, writes and fsyncs the shard
/// into the temporary directory without communicating. ready() and finish() are collective and run
/// on the main thread. The commit (finish) is exactly save_checkpoint's, with its errors: any rank's
/// write or the commit failing makes every rank throw FormatError and leaves earlier checkpoints
/// untouched. Destroying an unfinished save waits for the writer and commits nothing (the temporary
/// directory stays behind, ignored by discovery and removed by the next commit).
/// Test hook: ORTHOTRON_FAULT_SLOW_SAVE_MS=N makes every shard write (sync or async) sleep N ms first.
class AsyncSave {
 public:
  AsyncSave(const std::string& root, const CheckpointProgress& progress, const DistributedMuonWithAdamW& opt,
            const std::string& config_yaml, int64_t keep_last);
  ~AsyncSave();
  AsyncSave(const AsyncSave&) = delete;
  AsyncSave& operator=(const AsyncSave&) = delete;
  /// The iteration being saved.
  int64_t iteration() const;
  /// Collective, cheap (one 1-element all_reduce): true when every rank's write has finished.
  bool ready();
  /// Collective, blocking: waits for this rank's write, then commits. Call once.
  SaveResult finish();
  double blocked_seconds() const { return blocked_seconds_; }

 private:
  GridComm comm_;
  std::unique_ptr<SaveJob> job_;
  std::atomic<bool> done_{false};
  double blocked_seconds_ = 0;
  std::thread writer_;
};

/// Local: the committed checkpoints under `root` (directories named exactly iter_NNNNNNN), newest
/// first, as full paths. Temporary directories are ignored. An absent root gives an empty list.
std::vector<std::string> list_checkpoints(const std::string& root);

/// Local: what rank `rank` of a data-parallel job checks before a same-grid load: the manifest of `path` (parses,
/// format version, world size `world` without tensor parallelism: another grid is a ConfigError here; load_checkpoint
/// reshards), and this rank's shard (present, its size and CRC-32 as the manifest says, its identity metadata equal to
/// the manifest's save id and iteration, every tensor's CRC-32). FormatError naming the file, and for a damaged tensor
/// the tensor. Returns the progress recorded.
CheckpointProgress verify_checkpoint_shard(const std::string& path, int rank, int world);

/// Collective over the grid. Verifies (verify_checkpoint_shard on every rank; any failure makes
/// every rank throw FormatError with the failing rank's message), then loads this rank's parameter
/// shard and optimizer state and re-synchronizes the parameters; finally checks with a collective
/// that every rank's parameters are bitwise equal (InvariantError otherwise). StateDictError when
/// the checkpoint belongs to another model, split registry (naming the first parameter split
/// differently) or plan; tensors in another floating dtype are converted only where lossless
/// (convert_losslessly; reported in progress.state_load). On the same grid each rank's CPU
/// generator state is restored. Returns the progress recorded (step counts and
/// iteration carry over).
/// A checkpoint saved on another grid (data-parallel size, tensor-parallel size or both) is resharded
/// (reshard.h): its plan recomputed on the saved grid must hash to the saved plan hash (else
/// StateDictError naming the first parameter that differs); each rank then reads and verifies (file
/// and per-tensor CRC-32, save identity) only the old shards holding what it now holds (at the same
/// TP size: a Muon piece and its momentum from its old owner, an AdamW run's elements and moments
/// from the old ranks whose ranges overlap it; at another TP size: every old piece of those
/// parameters), assembles its new shard and state (bitwise copies) and loads them as above.
CheckpointProgress load_checkpoint(const std::string& path, DistributedMuonWithAdamW& opt);

/// Collective: the newest committed checkpoint under `root` that verifies on every rank, loaded
/// into `opt`; each one skipped is reported in `warnings` (rank 0 gets every rank's reason). false
/// when there is none (nothing loaded). One saved on another grid is resharded (see
/// load_checkpoint); a checkpoint of another model or plan is an error, not a skip.
bool load_latest_checkpoint(const std::string& root, DistributedMuonWithAdamW& opt, CheckpointProgress& progress,
                            std::string& loaded_path, std::vector<std::string>& warnings);

/// Collective: CRC-32 over every parameter of `opt`, compared across ranks (all_reduce min and
/// max). true when every rank holds bitwise the same parameters.
bool parameters_equal_across_ranks(const DistributedMuonWithAdamW& opt);

}  // namespace orthotron
