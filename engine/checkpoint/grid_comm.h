// grid_comm.h: the collectives a checkpoint runs over the whole training grid, every tensor-parallel
// and data-parallel rank, built from the optimizer's two communicators (no world communicator is
// needed). Grid rank = tp_rank + dp_rank x TP, Megatron's order; shard files are numbered by it.
// Without tensor parallelism the grid is the data-parallel group. Depends on optim/, parallel/.
#pragma once

#include <ATen/ATen.h>

#include <string>
#include <vector>

#include "optim/distributed_muon_with_adamw.h"
#include "parallel/communicator.h"

namespace orthotron {

class GridComm {
 public:
  /// `tp` may be null (no tensor parallelism). Both must outlive this object.
  GridComm(Communicator& dp, Communicator* tp) : dp_(dp), tp_(tp) {}
  explicit GridComm(const DistributedMuonWithAdamW& opt) : GridComm(opt.comm(), opt.tp_comm()) {}

  int tp_size() const { return tp_ == nullptr ? 1 : tp_->size(); }
  int tp_rank() const { return tp_ == nullptr ? 0 : tp_->rank(); }
  int dp_size() const { return dp_.size(); }
  int dp_rank() const { return dp_.rank(); }
  int rank() const { return tp_rank() + dp_rank() * tp_size(); }
  int size() const { return dp_size() * tp_size(); }
  /// int64 on the communicators' device.
  at::TensorOptions long_options() const;

  /// Collective, blocking: every grid rank's string, in grid-rank order.
  std::vector<std::string> all_gather_strings(const std::string& mine);
  /// Collective, blocking: `t` (int64, on the device) from grid rank 0 to every rank, in place.
  void broadcast_from_first(at::Tensor& t);
  /// Collective, blocking: element-wise max over the grid, in place.
  void all_reduce_max(at::Tensor& t);

 private:
  Communicator& dp_;
  Communicator* tp_;
};

}  // namespace orthotron
