// process_grid.cpp: Megatron-order grid arithmetic and its communicators.
#include "parallel/process_grid.h"

#include "base/errors.h"

namespace orthotron {

GridShape make_grid_shape(int world_size, int tp) {
  if (tp < 1 || world_size < 1 || world_size % tp != 0) {
    throw InvalidArgument("tensor-parallel size " + std::to_string(tp) + " must be >= 1 and divide the world size " +
                          std::to_string(world_size));
  }
  return GridShape{tp, world_size / tp};
}

GridCoords grid_coords(int rank, const GridShape& shape) {
  if (rank < 0 || rank >= shape.world()) {
    throw InvalidArgument("rank " + std::to_string(rank) + " is outside the grid of " + std::to_string(shape.world()) +
                          " ranks");
  }
  return GridCoords{rank % shape.tp, rank / shape.tp};
}

std::vector<int> tp_group_ranks(int rank, const GridShape& shape) {
  const GridCoords c = grid_coords(rank, shape);
  std::vector<int> out;
  for (int t = 0; t < shape.tp; ++t) out.push_back(c.dp_rank * shape.tp + t);
  return out;
}

std::vector<int> dp_group_ranks(int rank, const GridShape& shape) {
  const GridCoords c = grid_coords(rank, shape);
  std::vector<int> out;
  for (int d = 0; d < shape.dp; ++d) out.push_back(d * shape.tp + c.tp_rank);
  return out;
}

ProcessGrid::ProcessGrid(Communicator& world, int tp)
    : world_(world), shape_(make_grid_shape(world.size(), tp)), coords_(grid_coords(world.rank(), shape_)) {
  // Same color -> same group; the key orders members by their coordinate along the group's axis.
  tp_ = world.split(/*color=*/coords_.dp_rank, /*key=*/coords_.tp_rank, "tp");
  dp_ = world.split(/*color=*/coords_.tp_rank, /*key=*/coords_.dp_rank, "dp");
}

}  // namespace orthotron
