// reshard.h: resuming a sharded checkpoint at another data-parallel world size. From the saved
// layout record (the manifest's "layout": world size, plan hash, shard length, every Muon owner and
// every AdamW element range) and the new owner plan (recomputed from names and shapes at the new
// size), it says which old shards a new rank needs and assembles, from those shards' tensors, the
// parameter shard and the optimizer state dict that rank would hold had the run been at the new
// size all along. Only the world size may differ: the plan recomputed at the old size must hash to
// the saved plan hash. No file I/O and no communication here (checkpoint.cpp reads and verifies the
// files and loads the result). Depends on optim/ and base/.
#pragma once

#include <ATen/ATen.h>

#include <array>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "base/safetensors.h"
#include "optim/owner_plan.h"
#include "optim/state_dict.h"

namespace orthotron {

/// The manifest's layout record, parsed.
struct SavedLayout {
  int world = 0;
  std::string plan_hash;  ///< as the layout record spells it
  int64_t shard_len = 0;
  std::map<std::string, int> owners;  ///< Muon parameter -> owning old rank
  /// AdamW parameter -> its runs {old rank, begin, end} (flat element ranges), in buffer order.
  std::map<std::string, std::vector<std::array<int64_t, 3>>> adamw_ranges;
};

/// Parses the layout record; FormatError naming `where` and the field when malformed.
SavedLayout parse_saved_layout(const nlohmann::json& layout, const std::string& where);

/// The layout record `plan` itself would write (owners and ranges of every parameter).
SavedLayout layout_of(const OwnerPlan& plan);

/// "" when a checkpoint with layout `saved` was written by the model and plan of `plan` at
/// saved.world ranks (make_owner_plan(plan.params, saved.world) hashes to `saved_plan_hash`, the
/// manifest's 16-digit hex). Otherwise a message naming the first parameter that differs (missing,
/// extra, moved between Muon and AdamW, another element count, or another shape: `muon_shape(name,
/// old_rank)` gives the shape of a Muon matrix in its old owner's shard, and may throw), or saying
/// that groups, routing or splits differ when every name and shape matches.
std::string describe_plan_mismatch(const SavedLayout& saved, const std::string& saved_plan_hash, const OwnerPlan& plan,
                                   const std::function<std::vector<int64_t>(const std::string&, int)>& muon_shape);

/// The old ranks whose shards rank `rank` of `plan` needs (ascending): the old owner of every Muon
/// matrix it now owns and every old rank whose AdamW run overlaps one of its runs. `saved` must
/// describe the same parameters (describe_plan_mismatch returned ""); FormatError otherwise.
std::vector<int> reshard_sources(const SavedLayout& saved, const OwnerPlan& plan, int rank);

/// What rank `rank` of `plan` loads: the parameter shard (as DistributedMuonWithAdamW::
/// parameter_shard() lays it out) and the optimizer state dict (as its state_dict() would encode
/// it: the old shards' groups and format metadata, the entries of what the rank now holds with
/// their steps, and a layout record of the new plan for this rank).
struct ReshardedShard {
  std::map<std::string, at::Tensor> model;
  StateDict state;
};

/// Assembles rank `rank`'s shard from `sources` (old rank -> that old shard's verified content, at
/// least every rank reshard_sources named). Tensors are copied bitwise (no dtype change). FormatError
/// naming the old shard, parameter and tensor when something expected is missing or inconsistent
/// (a tensor of the wrong size, step counts that disagree between old ranks, state present on one
/// old rank and absent on another).
ReshardedShard assemble_reshard(const SavedLayout& saved, const std::map<int, SafetensorsContent>& sources,
                                const OwnerPlan& plan, int rank);

}  // namespace orthotron
