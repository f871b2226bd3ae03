// grid_comm.cpp: string gathers, broadcasts and maxima over the TP x DP grid.
#include "engine/checkpoint/grid_comm.h"

#include <algorithm>
#include <cstring>

namespace orthotron {

namespace {

/// Collective over `comm`: every rank's string, in rank order (lengths, then the bytes packed into int64s).
std::vector<std::string> gather_strings(Communicator& comm, const std::string& mine) {
  const auto options = at::TensorOptions().dtype(at::kLong).device(comm.device());
  const int world = comm.size();
  at::Tensor len = at::full({1}, static_cast<int64_t>(mine.size()), options);
  at::Tensor lens = at::empty({world}, options);
  comm.all_gather(lens, len);
  const at::Tensor lens_cpu = lens.cpu();
  int64_t longest = 0;
  for (int r = 0; r < world; ++r) longest = std::max(longest, lens_cpu[r].item<int64_t>());
  const int64_t words = std::max<int64_t>(1, (longest + 7) / 8);
  at::Tensor packed = at::zeros({words}, at::kLong);
  std::memcpy(packed.data_ptr<int64_t>(), mine.data(), mine.size());
  at::Tensor packed_dev = packed.to(comm.device());
  at::Tensor all = at::empty({world * words}, options);
  comm.all_gather(all, packed_dev);
  const at::Tensor all_cpu = all.cpu().contiguous();
  std::vector<std::string> out;
  for (int r = 0; r < world; ++r) {
    const char* p = reinterpret_cast<const char*>(all_cpu.data_ptr<int64_t>() + r * words);
    out.emplace_back(p, static_cast<size_t>(lens_cpu[r].item<int64_t>()));
  }
  return out;
}

}  // namespace

at::TensorOptions GridComm::long_options() const {
  return at::TensorOptions().dtype(at::kLong).device(dp_.device());
}

std::vector<std::string> GridComm::all_gather_strings(const std::string& mine) {
  std::vector<std::string> by_dp = gather_strings(dp_, mine);
  if (tp_ == nullptr || tp_->size() == 1) return by_dp;
  // Each TP rank now holds its column of the grid; one more gather over TP gives every column.
  // A column travels as "<length>:<bytes>" per DP rank, so any bytes survive.
  std::string column;
  for (const auto& s : by_dp) column += std::to_string(s.size()) + ":" + s;
  const std::vector<std::string> columns = gather_strings(*tp_, column);
  const int T = tp_size(), D = dp_size();
  std::vector<std::string> out(static_cast<size_t>(T * D));
  for (int t = 0; t < T; ++t) {
    const std::string& c = columns[static_cast<size_t>(t)];
    size_t at = 0;
    for (int d = 0; d < D; ++d) {
      const size_t colon = c.find(':', at);
      const size_t n = std::stoull(c.substr(at, colon - at));
      out[static_cast<size_t>(t + d * T)] = c.substr(colon + 1, n);
      at = colon + 1 + n;
    }
  }
  return out;
}

void GridComm::broadcast_from_first(at::Tensor& t) {
  if (tp_ != nullptr) tp_->broadcast(t, 0);  // along DP index 0's TP group first: grid rank 0 is (0, 0)
  dp_.broadcast(t, 0);
}

void GridComm::all_reduce_max(at::Tensor& t) {
  dp_.all_reduce(t, ReduceOp::kMax);
  if (tp_ != nullptr) tp_->all_reduce(t, ReduceOp::kMax);
}

}  // namespace orthotron
