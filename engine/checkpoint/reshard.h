// reshard.h: resuming a sharded checkpoint on another grid: another data-parallel size, another
// tensor-parallel size, or both. From the saved layout record (the manifest's "layout": the grid,
// plan hash, shard length, every Muon owner and every AdamW element range over the TP pieces, and at
// TP > 1 every parameter's cut and every gathered Muon parameter's TP owner) the plan of the saved
// grid is recomputed from the job's logical parameters; this file then says which old shards a new
// rank needs and assembles, from their tensors, the parameter shard and the optimizer state dict
// that rank would hold had the run been on the new grid all along. Both shard layouts save the same
// kind of content (every Muon matrix whole with its momentum on its owner, AdamW runs by range; see
// OwnerPlan::holdings), so a checkpoint of either layout resumes under the other this way too.
//   Same TP size (and cut): a rank's pieces are the old pieces of its own TP rank, so it reads only
//   the old shards holding them: a Muon piece's old DP owner, the old AdamW runs overlapping its run.
//   Another TP size: every parameter it holds is assembled whole (logical) from the old TP pieces
//   (tp_assemble) and cut again (tp_piece); it reads the old shards holding any of those pieces.
// Momentum and AdamW moments are element-wise, so a logical momentum cut into pieces is the
// pieces' momenta and the reverse: state kept on a TP owner (gathered) and state kept per piece
// (local) convert into each other. Bitwise copies only, no dtype change. No file I/O and no
// communication here (checkpoint.cpp reads and verifies the files and loads the result). Shard
// files are numbered by grid rank, tp_rank + dp_rank x TP (Megatron's order). Depends on optim/, base/.
#pragma once

#include <ATen/ATen.h>

#include <array>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "base/safetensors.h"
#include "optim/grid_plan.h"
#include "optim/state_dict.h"

namespace orthotron {

/// The manifest's layout record, parsed.
struct SavedLayout {
  int world = 0;                               ///< data-parallel size
  int tp = 1;                                  ///< tensor-parallel size
  std::string shard_layout = "owner_aligned";  ///< or "element_wise" (layout B)
  int64_t bucket_elements = 0;                 ///< layout B: the bucket size its cut followed (0: one bucket)
  std::string plan_hash;                       ///< as the layout record spells it
  int64_t shard_len = 0;
  std::map<std::string, int> owners;  ///< Muon parameter -> owning old DP rank
  /// AdamW parameter -> its runs {old DP rank, begin, end} (flat element ranges of a piece), in buffer order.
  std::map<std::string, std::vector<std::array<int64_t, 3>>> adamw_ranges;
  std::map<std::string, TpShard> cuts;   ///< TP > 1: every parameter not replicated
  std::map<std::string, int> tp_owners;  ///< TP > 1: every gathered Muon parameter's TP owner
  /// The shard file index of (tp_rank, dp_rank).
  int grid_rank(int tp_rank, int dp_rank) const { return tp_rank + dp_rank * tp; }
};

/// Parses the layout record; FormatError naming `where` and the field when malformed. A record
/// without "tensor_parallel" (every checkpoint before tensor parallelism) has TP = 1; one without
/// "shard_layout" is owner_aligned; one without "bucket_elements" was cut in one bucket.
SavedLayout parse_saved_layout(const nlohmann::json& layout, const std::string& where);

/// layout_record(plan) (grid_plan.h), parsed.
SavedLayout layout_of(const GridPlan& plan);

/// The plan of the saved grid (saved.tp x saved.world, the saved cuts and shard layout) for the job's logical
/// parameters and splits (rank-independent parts only: DP layout, cuts, gathered, TP owners).
/// InvalidArgument or ShapeError when those parameters cannot be planned on that grid.
GridPlan saved_grid_plan(const SavedLayout& saved, const GridPlan& job, const SplitRegistry& splits);

/// "" when a checkpoint with layout `saved` was written by the model, splits and routing of `job`
/// (saved_grid_plan hashes to `saved_plan_hash`, the manifest's 16-digit hex). Otherwise a message
/// naming the first parameter that differs (missing, extra, moved between Muon and AdamW, another
/// element count, or another logical shape: `muon_shape(name, old_grid_rank)` gives the shape of a
/// Muon piece in that old shard, and may throw), or saying that groups, routing or splits differ when
/// every name and shape matches.
std::string describe_plan_mismatch(const SavedLayout& saved, const std::string& saved_plan_hash, const GridPlan& job,
                                   const SplitRegistry& splits,
                                   const std::function<std::vector<int64_t>(const std::string&, int)>& muon_shape);

/// The old grid ranks (shard files) whose content rank (plan.tp_rank, dp_rank) of the new grid
/// needs, ascending (see the file comment). `old_plan` is saved_grid_plan's; `saved` must describe
/// the same parameters (describe_plan_mismatch returned ""); FormatError otherwise.
std::vector<int> reshard_sources(const SavedLayout& saved, const GridPlan& old_plan, const GridPlan& plan, int dp_rank);

/// What a rank of the new grid loads: the parameter shard (as DistributedMuonWithAdamW::
/// parameter_shard() lays it out) and the optimizer state dict (as its state_dict() would encode
/// it: the old shards' groups and format metadata, the entries of what the rank now holds with
/// their steps, and the new plan's layout record for this rank).
struct ReshardedShard {
  std::map<std::string, at::Tensor> model;
  StateDict state;
};

/// Assembles rank (plan.tp_rank, dp_rank)'s shard from `sources` (old grid rank -> that old
/// shard's verified content, at least every rank reshard_sources named). FormatError naming the old
/// rank, parameter and tensor when something expected is missing or inconsistent (a tensor of the
/// wrong size, step counts that disagree between old ranks, state present on one old rank and
/// absent on another).
ReshardedShard assemble_reshard(const SavedLayout& saved, const GridPlan& old_plan,
                                const std::map<int, SafetensorsContent>& sources, const GridPlan& plan, int dp_rank);

}  // namespace orthotron
