// muon_batch.h: the orthogonalize-and-apply half of a Muon step over many parameters at once:
// each parameter's direction is cut into its real matrices (split parts, expert stacks, or the
// whole matrix), same-shape matrices of a group go through one batched Newton-Schulz call, and
// each result is applied with its own shape scale. Shared by the single-process and distributed
// containers, so both compute the same bits.
#pragma once

#include <ATen/ATen.h>

#include <functional>
#include <map>
#include <string>
#include <vector>

#include "optim/muon.h"
#include "optim/split_registry.h"

namespace orthotron {

struct MuonTask {
  at::Tensor param;         ///< updated in place (may be a view into a flat shard buffer)
  at::Tensor direction;     ///< U from muon_momentum_direction, param's shape
  const ParamSplit* split;  ///< nullptr: the parameter is one matrix or a [k, m, n] stack
  size_t group;             ///< batching key: only matrices of one group share an NS call
  const MuonOptions* options;
  std::string name;
};

/// What one group's Newton-Schulz work was in one step: the matrices orthogonalized and the batched
/// calls they went through (one per distinct matrix shape).
struct NsGroupCount {
  int64_t matrices = 0;
  int64_t calls = 0;
  bool operator==(const NsGroupCount& o) const { return matrices == o.matrices && calls == o.calls; }
};
using NsCounts = std::map<size_t, NsGroupCount>;  ///< keyed by group index; groups with no work absent

/// One matrix's Newton-Schulz for run_ns_matrix_parallel and apply_muon_tasks: `consume` receives
/// newton_schulz_matrix(input) (compute dtype, input's shape, possibly a transposed view, valid
/// only during the call) on the thread that computed it.
struct NsMatrixJob {
  at::Tensor input;  ///< [m, n]
  const NsOptions* options;
  std::function<void(const at::Tensor&)> consume;
};

/// A job whose result is written into `output` ([m, n], contiguous, any dtype): newton_schulz's bits.
NsMatrixJob ns_job_into(const at::Tensor& input, at::Tensor output, const NsOptions* options);

/// Orthogonalizes each job's matrix on one thread, the matrices side by side on the process's
/// intra-op threads (ns_parallel: matrices): largest first (newton_schulz_flops), each free thread
/// taking the next. Every product of a matrix runs on the thread that took it (BLAS called inside
/// an OpenMP region stays on its thread), and each matrix gets the bits newton_schulz gives it at
/// the same thread count, whichever other jobs share the call (tested). Blocking. `between`, when
/// set, runs on the calling thread only, after each matrix that thread finished (a distributed step
/// tests its posted collectives there: MPI progresses them only inside MPI calls, and the process
/// initializes MPI for calls from its main thread alone).
void run_ns_matrix_parallel(const std::vector<NsMatrixJob>& jobs, const std::function<void()>& between = {});

/// Orthogonalizes every task's matrices and applies W <- W (1 - lr wd) - lr scale O part by part.
/// Tasks are processed in order; matrices are batched by (group, m, n) in first-appearance order.
/// Groups under ns_parallel: matrices run their matrices through run_ns_matrix_parallel.
/// Returns what it ran, per group, for the plan check (ns_audit.h). Blocking, no communication;
/// `between` runs on the calling thread after each matrix it finished (run_ns_matrix_parallel).
NsCounts apply_muon_tasks(const std::vector<MuonTask>& tasks, const std::function<void()>& between = {});

/// `count` matrices of shape [m, n].
struct MuonMatrixShape {
  int64_t m = 0, n = 0, count = 0;
};
/// The matrices Newton-Schulz sees for a Muon parameter of logical shape `shape`: one per split
/// part ([part rows, n]); k of [m, n] for a [k, m, n] stack; one [d0, d1 * ...] for higher ranks;
/// the matrix itself for 2-D. The same cut apply_muon_tasks makes (muon_matrix_view).
std::vector<MuonMatrixShape> muon_matrices(const std::vector<int64_t>& shape, const ParamSplit* split);

/// The NS cost max(m,n) * min(m,n)^2 summed over `matrices`.
double muon_ns_cost(const std::vector<MuonMatrixShape>& matrices);
/// The same over the parameter's matrices: muon_ns_cost(muon_matrices(shape, split)).
double muon_ns_cost(const std::vector<int64_t>& shape, const ParamSplit* split);

}  // namespace orthotron
