// test_process_grid.cpp: the grid's index arithmetic (Megatron rank order) for several shapes,
// without running ranks; tests/distributed/test_comm_mpi.cpp checks the real communicators.
#include <gtest/gtest.h>

#include <set>

#include "base/errors.h"
#include "parallel/process_grid.h"

namespace orthotron {
namespace {

TEST(GridArithmetic, TensorParallelIsFastest) {
  const GridShape s = make_grid_shape(8, 2);
  EXPECT_EQ(s.dp, 4);
  EXPECT_EQ(grid_coords(5, s).tp_rank, 1);
  EXPECT_EQ(grid_coords(5, s).dp_rank, 2);
  EXPECT_EQ(tp_group_ranks(5, s), (std::vector<int>{4, 5}));
  EXPECT_EQ(dp_group_ranks(5, s), (std::vector<int>{1, 3, 5, 7}));
}

TEST(GridArithmetic, GroupsPartitionTheWorldForManyShapes) {
  for (int world : {1, 2, 3, 4, 6, 8, 12, 16, 64}) {
    for (int tp = 1; tp <= world; ++tp) {
      if (world % tp != 0) continue;
      const GridShape s = make_grid_shape(world, tp);
      std::set<std::vector<int>> tp_groups, dp_groups;
      for (int r = 0; r < world; ++r) {
        const auto tg = tp_group_ranks(r, s), dg = dp_group_ranks(r, s);
        ASSERT_EQ(static_cast<int>(tg.size()), tp);
        ASSERT_EQ(static_cast<int>(dg.size()), world / tp);
        EXPECT_EQ(tg[grid_coords(r, s).tp_rank], r);
        EXPECT_EQ(dg[grid_coords(r, s).dp_rank], r);
        EXPECT_EQ(r, grid_coords(r, s).tp_rank + grid_coords(r, s).dp_rank * tp);
        tp_groups.insert(tg);
        dp_groups.insert(dg);
      }
      EXPECT_EQ(static_cast<int>(tp_groups.size()), world / tp) << world << "/" << tp;
      EXPECT_EQ(static_cast<int>(dp_groups.size()), tp) << world << "/" << tp;
    }
  }
}

TEST(GridArithmetic, RejectsShapesThatDoNotDivide) {
  EXPECT_THROW(make_grid_shape(6, 4), InvalidArgument);
  EXPECT_THROW(make_grid_shape(4, 0), InvalidArgument);
  EXPECT_THROW(grid_coords(8, make_grid_shape(8, 2)), InvalidArgument);
}

}  // namespace
}  // namespace orthotron
