// process_grid.h: the tensor-parallel x data-parallel process grid in Megatron's rank order
// (tensor-parallel fastest: rank = tp + dp * TP), as pure index arithmetic and as communicators.
#pragma once

#include <memory>
#include <vector>

#include "parallel/communicator.h"

namespace orthotron {

struct GridShape {
  int tp = 1;  ///< tensor-parallel size
  int dp = 1;  ///< data-parallel size
  int world() const { return tp * dp; }
};

struct GridCoords {
  int tp_rank = 0;
  int dp_rank = 0;
};

/// The grid shape for `world_size` ranks with tensor-parallel size `tp`; InvalidArgument when tp
/// does not divide the world size.
GridShape make_grid_shape(int world_size, int tp);
/// Coordinates of `rank`: tp_rank = rank % TP, dp_rank = rank / TP.
GridCoords grid_coords(int rank, const GridShape& shape);
/// World ranks of the tensor-parallel group holding `rank` (consecutive ranks), in tp order.
std::vector<int> tp_group_ranks(int rank, const GridShape& shape);
/// World ranks of the data-parallel group holding `rank` (stride TP), in dp order.
std::vector<int> dp_group_ranks(int rank, const GridShape& shape);

/// The grid's communicators, split from `world`. Collective over `world`: every rank must construct it.
class ProcessGrid {
 public:
  ProcessGrid(Communicator& world, int tp);
  const GridShape& shape() const { return shape_; }
  const GridCoords& coords() const { return coords_; }
  Communicator& world() { return world_; }
  Communicator& tp() { return *tp_; }
  Communicator& dp() { return *dp_; }

 private:
  Communicator& world_;
  GridShape shape_;
  GridCoords coords_;
  std::unique_ptr<Communicator> tp_;
  std::unique_ptr<Communicator> dp_;
};

}  // namespace orthotron
