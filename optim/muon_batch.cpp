// muon_batch.cpp: batched Newton-Schulz over many parameters' matrices, then per-part updates.
#include "optim/muon_batch.h"

#include <algorithm>
#include <map>
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

NsCounts apply_muon_tasks(const std::vector<MuonTask>& tasks) {
  // One entry per matrix block: which task, which split part (-1: the whole [k, m, n] view).
  struct Block {
    size_t task;
    int part;
    at::Tensor matrices;  // [k, m, n]
  };
  struct Bucket {
    std::vector<size_t> blocks;
  };
  std::vector<Block> blocks;
  std::vector<Bucket> buckets;
  std::map<std::tuple<size_t, int64_t, int64_t>, size_t> bucket_of;
  for (size_t t = 0; t < tasks.size(); ++t) {
    const MuonTask& task = tasks[t];
    if (task.split != nullptr) {
      for (size_t p = 0; p < task.split->parts.size(); ++p) {
        blocks.push_back({t, static_cast<int>(p), split_gather(task.direction, task.split->parts[p]).unsqueeze(0)});
      }
    } else {
      blocks.push_back({t, -1, muon_matrix_view(task.direction, task.name)});
    }
  }
  for (size_t b = 0; b < blocks.size(); ++b) {
    const auto key =
        std::make_tuple(tasks[blocks[b].task].group, blocks[b].matrices.size(1), blocks[b].matrices.size(2));
    auto it = bucket_of.find(key);
    if (it == bucket_of.end()) {
      it = bucket_of.emplace(key, buckets.size()).first;
      buckets.emplace_back();
    }
    buckets[it->second].blocks.push_back(b);
  }
  NsCounts counts;
  for (const auto& bucket : buckets) {
    std::vector<at::Tensor> inputs;
    for (size_t b : bucket.blocks) inputs.push_back(blocks[b].matrices);
    const MuonTask& first = tasks[blocks[bucket.blocks[0]].task];
    const at::Tensor batch = inputs.size() == 1 ? inputs[0] : at::cat(inputs, 0);
    NsGroupCount& count = counts[first.group];
    count.matrices += batch.size(0);
    count.calls += 1;
    const at::Tensor ortho = newton_schulz(batch, first.options->ns);
    int64_t row = 0;
    for (size_t b : bucket.blocks) {
      const MuonTask& task = tasks[blocks[b].task];
      const int64_t k = blocks[b].matrices.size(0);
      const at::Tensor o = ortho.narrow(0, row, k);
      row += k;
      if (blocks[b].part < 0) {
        at::Tensor param = task.param;
        muon_apply_update(param, o, *task.options, task.name);
        continue;
      }
      // A split part: the same element-wise update as a separate parameter of the part's shape.
      const SplitPart& part = task.split->parts[static_cast<size_t>(blocks[b].part)];
      at::Tensor sub = split_gather(task.param, part);
      muon_apply_update(sub, o, *task.options, task.name + "/" + part.name);
      at::Tensor param = task.param;
      split_scatter(param, part, sub);
    }
  }
  return counts;
}

}  // namespace orthotron
