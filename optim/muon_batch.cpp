// muon_batch.cpp: batched Newton-Schulz over many parameters' matrices, then per-part updates.
#include "optim/muon_batch.h"

#include <ATen/Parallel.h>
#include <ATen/ThreadLocalState.h>

#include <algorithm>
#include <atomic>
#include <map>
#include <numeric>
#include <set>
#include <thread>
#include <tuple>

namespace orthotron {

std::vector<MuonMatrixShape> muon_matrices(const std::vector<int64_t>& shape, const ParamSplit* split) {
  if (shape.size() < 2) return {};
  if (split != nullptr) {
    std::vector<MuonMatrixShape> out;
    for (const auto& p : split->parts) out.push_back({p.rows.numel(), shape[1], 1});
    return out;
  }
  if (shape.size() == 2) return {{shape[0], shape[1], 1}};
  if (shape.size() == 3) return {{shape[1], shape[2], shape[0]}};
  int64_t rest = 1;
  for (size_t i = 1; i < shape.size(); ++i) rest *= shape[i];
  return {{shape[0], rest, 1}};
}

double muon_ns_cost(const std::vector<int64_t>& shape, const ParamSplit* split) {
  return muon_ns_cost(muon_matrices(shape, split));
}

double muon_ns_cost(const std::vector<MuonMatrixShape>& matrices) {
  double c = 0;
  for (const auto& mat : matrices) {
    const double m = static_cast<double>(mat.m), n = static_cast<double>(mat.n);
    c += static_cast<double>(mat.count) * std::max(m, n) * std::min(m, n) * std::min(m, n);
  }
  return c;
}

NsMatrixJob ns_job_into(const at::Tensor& input, at::Tensor output, const NsOptions* options) {
  return {input, options, [output](const at::Tensor& result) { copy_ns_result(output, result); }};
}

namespace {

/// Runs one job with this thread's scratch (kept across jobs of the same shape).
void run_ns_job(const NsMatrixJob& job, NsScratch& scratch) {
  job.consume(newton_schulz_matrix(job.input, *job.options, scratch));
}

}  // namespace

void run_ns_matrix_parallel(const std::vector<NsMatrixJob>& jobs, const std::function<void()>& between) {
  if (jobs.empty()) return;
  std::vector<size_t> order(jobs.size());
  std::iota(order.begin(), order.end(), size_t{0});
  auto cost = [&](size_t j) {
    const auto& in = jobs[j].input;
    return newton_schulz_flops(in.size(0), in.size(1), jobs[j].options->steps);
  };
  std::stable_sort(order.begin(), order.end(), [&](size_t x, size_t y) { return cost(x) > cost(y); });
  std::atomic<size_t> next{0};
  // The caller's thread-local state (grad mode above all: the updates run in place on leaves that
  // require grad) follows the jobs onto the pool's threads.
  const at::ThreadLocalState caller_state;
  const std::thread::id caller = std::this_thread::get_id();
  auto drain = [&] {
    const at::ThreadLocalStateGuard state_guard(caller_state);
    NsScratch scratch;
    const bool on_caller = between && std::this_thread::get_id() == caller;
    for (size_t j = next++; j < order.size(); j = next++) {
      run_ns_job(jobs[order[j]], scratch);
      if (on_caller) between();
    }
  };
  // Inside an OpenMP region BLAS runs on the calling thread, so every product of a matrix stays on
  // the thread that took it, however many matrices there are.
  const int threads = at::get_num_threads();
  if (threads <= 1 || at::in_parallel_region()) {
    drain();
    return;
  }
  at::parallel_for(0, threads, 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) drain();
  });
}

NsCounts apply_muon_tasks(const std::vector<MuonTask>& tasks, const std::function<void()>& between) {
  // One entry per matrix block: which task, which split part (-1: the whole [k, m, n] view).
  struct Block {
    size_t task;
    int part;
    at::Tensor matrices;  // [k, m, n]
    at::Tensor ortho;     // a split part's result, [1, m, n], scattered after Newton-Schulz
  };
  std::vector<Block> blocks;
  for (size_t t = 0; t < tasks.size(); ++t) {
    const MuonTask& task = tasks[t];
    if (task.split != nullptr) {
      for (size_t p = 0; p < task.split->parts.size(); ++p) {
        blocks.push_back(
            {t, static_cast<int>(p), split_gather(task.direction, task.split->parts[p]).unsqueeze(0), at::Tensor()});
      }
    } else {
      blocks.push_back({t, -1, muon_matrix_view(task.direction, task.name), at::Tensor()});
    }
  }
  // Same-shape matrices of a group count as one batched call (the plan check's unit); each matrix
  // is one job: Newton-Schulz, then its update applied straight from the result, while it is in
  // cache. Groups under ns_parallel: matrices run their jobs side by side, the others one by one.
  NsCounts counts;
  std::set<std::tuple<size_t, int64_t, int64_t>> batches;
  std::vector<NsMatrixJob> one_by_one, side_by_side;
  for (Block& block : blocks) {
    const MuonTask& task = tasks[block.task];
    const int64_t k = block.matrices.size(0);
    NsGroupCount& count = counts[task.group];
    count.matrices += k;
    if (batches.insert({task.group, block.matrices.size(1), block.matrices.size(2)}).second) count.calls += 1;
    auto& jobs = task.options->ns.parallel == NsParallel::kMatrices ? side_by_side : one_by_one;
    if (block.part >= 0) {
      block.ortho = at::empty(block.matrices.sizes(), block.matrices.options());
      jobs.push_back(ns_job_into(block.matrices[0], block.ortho[0], &task.options->ns));
      continue;
    }
    for (int64_t i = 0; i < k; ++i) {
      // A [k, m, n] stack updates matrix by matrix; any other parameter is one matrix, updated whole.
      at::Tensor target = task.param.dim() == 3 ? task.param[i] : task.param;
      jobs.push_back({block.matrices[i], &task.options->ns, [target, &task](const at::Tensor& result) mutable {
                        muon_apply_update(target, result, *task.options, task.name);
                      }});
    }
  }
  NsScratch scratch;
  for (const NsMatrixJob& job : one_by_one) {
    run_ns_job(job, scratch);
    if (between) between();
  }
  run_ns_matrix_parallel(side_by_side, between);
  // A split part: the same element-wise update as a separate parameter of the part's shape.
  for (const Block& block : blocks) {
    if (block.part < 0) continue;
    const MuonTask& task = tasks[block.task];
    const SplitPart& part = task.split->parts[static_cast<size_t>(block.part)];
    at::Tensor sub = split_gather(task.param, part);
    muon_apply_update(sub, block.ortho, *task.options, task.name + "/" + part.name);
    at::Tensor param = task.param;
    split_scatter(param, part, sub);
  }
  return counts;
}

}  // namespace orthotron
