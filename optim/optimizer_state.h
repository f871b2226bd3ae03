// optimizer_state.h: the one path that encodes, validates and decodes MuonWithAdamW optimizer
// state (groups with full hyperparameters, per-parameter entries, state tensors, metadata), used
// by the single-process and the distributed container alike (and by resharding later). The
// containers only say what they hold (StateEntry) and what they expect (ExpectedParam) and apply
// the validated result. No file I/O, no communication. Depends on optim/ types and base/.
#pragma once

#include <ATen/ATen.h>

#include <array>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "optim/param_routing.h"
#include "optim/state_dict.h"

namespace orthotron {

/// Largest step count a state file may claim (about 30 years at 1000 steps per second).
constexpr int64_t kMaxStateSteps = 1'000'000'000'000;

/// The state tensor slots of an algorithm, in order: Muon {"momentum"}, AdamW {"exp_avg", "exp_avg_sq"}.
const std::vector<std::string>& state_slots(Algorithm a);
/// The state-dict section an algorithm's state lives in: "muon" or "adamw".
const char* state_section(Algorithm a);

/// What one holder keeps of one parameter.
struct StateEntry {
  std::string name;
  Algorithm algorithm = Algorithm::kMuon;
  std::string group;
  int64_t step = 0;
  std::vector<int64_t> shape;                   ///< the parameter's full logical shape
  at::ScalarType dtype = at::kFloat;            ///< the parameter's dtype
  std::optional<std::array<int64_t, 2>> range;  ///< flat element range held, when only a shard is held
  std::vector<at::Tensor> tensors;              ///< state_slots order; empty before the first step
};

/// Builds the state dict: header metadata ("orthotron.format", "orthotron.format_version",
/// "orthotron.optimizer") and "orthotron.state" JSON with every group's hyperparameters (from the
/// option tables) and every entry; tensors keyed "<section>/<param>/<slot>". `layout`, when given,
/// is stored as "orthotron.layout" (the distributed container's shard record).
StateDict encode_optimizer_state(const std::vector<ParamGroup>& groups, const std::vector<StateEntry>& entries,
                                 const std::optional<nlohmann::json>& layout = std::nullopt);

/// What a loading holder expects for one parameter it keeps state for.
struct ExpectedParam {
  std::string name;
  Algorithm algorithm = Algorithm::kMuon;
  std::string group;
  std::vector<int64_t> shape;
  at::ScalarType dtype = at::kFloat;
  std::optional<std::array<int64_t, 2>> range;  ///< when set, state tensors are 1-D of range length
};

/// One validated parameter state, ready to apply.
struct DecodedParam {
  size_t expected = 0;  ///< index into the `expected` list
  int64_t step = 0;
  std::vector<at::Tensor> tensors;  ///< state_slots order, CPU; empty when no step was taken
};

struct DecodedState {
  std::vector<DecodedParam> params;
  std::optional<nlohmann::json> layout;  ///< "orthotron.layout" when present (validated JSON object)
  LoadReport report;
};

/// Validates `sd` against the holder's `groups` and `expected` parameters, then returns what to
/// apply; nothing is modified. Checks, each a StateDictError naming the key, parameter, tensor and
/// the expected versus found value: format, version and optimizer kind; "orthotron.state" as
/// strict JSON; both sections and their groups (a group stored under the other algorithm, or with
/// a malformed or out-of-range hyperparameter); each expected parameter's entry (present, in the
/// same group, moved between Muon and AdamW, shape, range, a dtype equal to its tensors', step an integer in [0,
/// kMaxStateSteps], step 0 holding tensors); each tensor (present for a stepped parameter, the
/// whole set of slots or none, shape, finite values, exp_avg_sq >= 0; a dtype other than the live
/// one converted where lossless, else an error: convert_losslessly, listed in report.converted); unexpected
/// parameters, tensors and groups; a layout record where none is expected or the reverse.
/// With options.allow_partial, missing/unexpected sections, groups, parameters and tensors and
/// shape mismatches are skipped and listed in the report; malformed or non-finite data never is.
/// Hyperparameters: the holder's (the config's) win; every stored value that differs is listed in
/// report.changed_hyperparameters (the rule of README "Resume and hyperparameters").
/// `check_layout`, when given, validates the layout record right after the header, before any
/// entry, so a plan or world-size mismatch is reported as such rather than as its consequences.
DecodedState decode_optimizer_state(const StateDict& sd, const std::vector<ParamGroup>& groups,
                                    const std::vector<ExpectedParam>& expected, bool expect_layout,
                                    const LoadOptions& options,
                                    const std::function<void(const nlohmann::json&)>& check_layout = {});

}  // namespace orthotron
