// test_comm_mpi.cpp: every collective of the MPI Communicator against closed forms, run by CTest
// on 1, 2, 3 and 4 real ranks (and 2 ranks over TCP only): each dtype, odd and empty sizes,
// non-contiguous tensors, non-blocking handles, argument errors, byte counters, the process grid.
#include <gtest/gtest.h>

#include <numeric>

#include "base/errors.h"
#include "mpi_world.h"
#include "parallel/dist_env.h"
#include "parallel/mpi_runtime.h"
#include "parallel/process_grid.h"

namespace orthotron {
namespace {

using orthotron::testing::world;

const std::vector<at::ScalarType> kDtypes = {at::kFloat, at::kDouble, at::kBFloat16, at::kHalf, at::kLong};
const std::vector<int64_t> kSizes = {0, 1, 7, 1023};

// A tensor of `n` elements whose element i is (rank + 1) * (i % 5 + 1): small integers, exact in every dtype.
at::Tensor rank_filled(int64_t n, int rank, at::ScalarType dtype) {
  return ((at::arange(n, at::kLong) % 5 + 1) * (rank + 1)).to(dtype);
}

TEST(DistEnv, MatchesMpi) {
  const DistEnv env = read_dist_env();
  EXPECT_EQ(env.rank, world().rank());
  EXPECT_EQ(env.world_size, world().size());
  EXPECT_EQ(env.source, "openmpi");
  EXPECT_GE(env.local_rank, 0);
  EXPECT_LT(env.local_rank, env.local_size);
}

TEST(AllReduce, ClosedFormsForEveryDtypeAndSize) {
  const int w = world().size(), r = world().rank();
  for (auto dtype : kDtypes) {
    for (int64_t n : kSizes) {
      const at::Tensor pattern = (at::arange(n, at::kLong) % 5 + 1).to(at::kDouble);
      at::Tensor s = rank_filled(n, r, dtype);
      world().all_reduce(s, ReduceOp::kSum);
      EXPECT_TRUE(at::equal(s.to(at::kDouble), pattern * (w * (w + 1) / 2))) << c10::toString(dtype) << " n=" << n;
      at::Tensor m = rank_filled(n, r, dtype);
      world().all_reduce(m, ReduceOp::kMax);
      EXPECT_TRUE(at::equal(m.to(at::kDouble), pattern * w)) << c10::toString(dtype) << " n=" << n;
      if (dtype == at::kLong) continue;
      at::Tensor a = rank_filled(n, r, dtype);
      world().all_reduce(a, ReduceOp::kAvg);
      EXPECT_TRUE(at::equal(a.to(at::kDouble), (pattern * (w + 1) / 2.0).to(dtype).to(at::kDouble)))
          << c10::toString(dtype) << " n=" << n;
      EXPECT_EQ(a.scalar_type(), dtype);
    }
  }
}

// bf16 sums are accumulated in fp32 and rounded once: 256 + 1 + 1 (+ 1) is 258 (260), where a
// bf16 running sum would stay at 256 (the bf16 spacing at 256 is 2).
TEST(AllReduce, Bf16IsRoundedOnceFromAnFp32Sum) {
  const int w = world().size(), r = world().rank();
  at::Tensor t = at::full({3}, r == 0 ? 256.0 : 1.0).to(at::kBFloat16);
  world().all_reduce(t, ReduceOp::kSum);
  const at::Tensor expected = at::full({3}, 256.0 + (w - 1)).to(at::kBFloat16);
  EXPECT_TRUE(at::equal(t, expected)) << t << " vs " << expected;
}

TEST(ReduceScatter, ClosedForms) {
  const int w = world().size(), r = world().rank();
  for (auto dtype : {at::kFloat, at::kDouble, at::kBFloat16, at::kLong}) {
    for (int64_t n : kSizes) {
      // input element k = k % 7 + rank (small integers, exact in bf16)  ->  block r, element j:
      // sum over ranks q of ((r n + j) % 7 + q) = W ((r n + j) % 7) + W (W - 1) / 2
      const at::Tensor input = (at::arange(w * n, at::kLong) % 7 + r).to(dtype);
      at::Tensor out = at::empty({n}, input.options());
      world().reduce_scatter(out, input, ReduceOp::kSum);
      const at::Tensor expected = ((at::arange(n, at::kLong) + r * n) % 7) * w + w * (w - 1) / 2;
      EXPECT_TRUE(at::equal(out.to(at::kLong), expected)) << c10::toString(dtype) << " n=" << n;
      if (dtype == at::kLong) continue;
      at::Tensor avg = at::empty({n}, input.options());
      world().reduce_scatter(avg, input, ReduceOp::kAvg);
      EXPECT_TRUE(at::allclose(avg.to(at::kDouble), expected.to(at::kDouble) / w, 1e-2, 0))
          << c10::toString(dtype) << " n=" << n;
    }
  }
}

// The MPI backend adds the W blocks in rank order 0, 1, ..., W-1, whatever the size: on random
// float32 values (whose sum depends on the order) the result equals that order's sum bit for bit,
// for a small and a large buffer, with several reduce-scatters in flight at once (each needs its
// own receive buffer from the pool) and completed through test() alone.
TEST(ReduceScatter, SumsInRankOrderBitwise) {
  const int w = world().size(), r = world().rank();
  for (int64_t n : {int64_t{5}, int64_t{300000}}) {
    auto input_of = [&](int q, int k) {
      at::manual_seed(static_cast<uint64_t>(1000 * k + q));
      return at::randn({w * n}) * (q + 1);
    };
    std::vector<at::Tensor> outs, inputs;
    std::vector<WorkPtr> works;
    for (int k = 0; k < 3; ++k) {
      inputs.push_back(input_of(r, k));
      outs.push_back(at::empty({n}));
      works.push_back(world().ireduce_scatter(outs.back(), inputs.back(), ReduceOp::kSum));
    }
    for (auto& work : works) {
      while (!work->test()) {
      }
      EXPECT_TRUE(work->test());  // stays complete
      work->wait();               // and returns at once
    }
    for (int k = 0; k < 3; ++k) {
      at::Tensor expected = input_of(0, k).narrow(0, r * n, n).clone();
      for (int q = 1; q < w; ++q) expected.add_(input_of(q, k).narrow(0, r * n, n));
      EXPECT_TRUE(at::equal(outs[static_cast<size_t>(k)], expected)) << "n=" << n << " k=" << k;
    }
    at::Tensor mx = at::empty({n});
    world().reduce_scatter(mx, input_of(r, 0), ReduceOp::kMax);
    at::Tensor expected_max = input_of(0, 0).narrow(0, r * n, n).clone();
    for (int q = 1; q < w; ++q) expected_max = at::maximum(expected_max, input_of(q, 0).narrow(0, r * n, n));
    EXPECT_TRUE(at::equal(mx, expected_max)) << "n=" << n;
  }
}

// bf16 blocks are summed in float32 and rounded once, as all_reduce does.
TEST(ReduceScatter, Bf16IsRoundedOnceFromAnFp32Sum) {
  const int w = world().size(), r = world().rank();
  const at::Tensor input = at::full({3 * w}, r == 0 ? 256.0 : 1.0).to(at::kBFloat16);
  at::Tensor out = at::empty({3}, input.options());
  world().reduce_scatter(out, input, ReduceOp::kSum);
  EXPECT_TRUE(at::equal(out, at::full({3}, 256.0 + (w - 1)).to(at::kBFloat16))) << out;
}

TEST(AllGather, ClosedForms) {
  const int w = world().size(), r = world().rank();
  for (auto dtype : kDtypes) {
    for (int64_t n : kSizes) {
      // Values below 256 are exact in every dtype.
      const at::Tensor input = (at::arange(n, at::kLong) % 50 + r * 50).to(dtype);
      at::Tensor out = at::full({w * n}, -1).to(dtype);
      world().all_gather(out, input);
      for (int q = 0; q < w; ++q) {
        EXPECT_TRUE(at::equal(out.narrow(0, q * n, n).to(at::kLong), at::arange(n, at::kLong) % 50 + q * 50))
            << c10::toString(dtype) << " n=" << n << " block " << q;
      }
    }
  }
}

// Rank s sends count(s, d) = (s + 2 d) % 4 elements to rank d, valued s * 10000 + d * 100 + i.
int64_t a2a_count(int s, int d) {
  return (s + 2 * d) % 4;
}

TEST(AllToAll, UnevenSplits) {
  const int w = world().size(), r = world().rank();
  for (auto dtype : {at::kFloat, at::kBFloat16, at::kLong}) {
    std::vector<int64_t> send(w), recv(w);
    std::vector<at::Tensor> pieces;
    for (int d = 0; d < w; ++d) {
      send[d] = a2a_count(r, d);
      recv[d] = a2a_count(d, r);
      pieces.push_back(at::arange(send[d], at::kLong) + r * 10000 + d * 100);
    }
    const at::Tensor input = at::cat(pieces).to(dtype == at::kBFloat16 ? at::kFloat : dtype);
    const at::Tensor in = dtype == at::kBFloat16 ? (input.remainder(256)).to(dtype) : input;
    at::Tensor out = at::empty({std::accumulate(recv.begin(), recv.end(), int64_t{0})}, in.options());
    world().all_to_all(out, in, send, recv);
    int64_t off = 0;
    for (int s = 0; s < w; ++s) {
      at::Tensor expected = at::arange(recv[s], at::kLong) + s * 10000 + r * 100;
      if (dtype == at::kBFloat16) expected = expected.remainder(256);
      EXPECT_TRUE(at::equal(out.narrow(0, off, recv[s]).to(at::kLong), expected))
          << c10::toString(dtype) << " from " << s;
      off += recv[s];
    }
  }
}

TEST(Broadcast, FromEveryRoot) {
  const int w = world().size(), r = world().rank();
  for (int root = 0; root < w; ++root) {
    for (auto dtype : kDtypes) {
      at::Tensor t = rank_filled(13, r, dtype);
      world().broadcast(t, root);
      EXPECT_TRUE(at::equal(t, rank_filled(13, root, dtype))) << "root " << root << " " << c10::toString(dtype);
    }
  }
}

TEST(Collectives, NonContiguousTensorsAreHandled) {
  const int w = world().size(), r = world().rank();
  // all_reduce in place on a transposed view writes back through the view.
  at::Tensor base = rank_filled(12, r, at::kFloat).reshape({3, 4});
  at::Tensor view = base.t();
  ASSERT_FALSE(view.is_contiguous());
  world().all_reduce(view, ReduceOp::kSum);
  EXPECT_TRUE(at::equal(base, rank_filled(12, 0, at::kFloat).reshape({3, 4}) * (w * (w + 1) / 2)));
  // all_gather into a strided output (every other element of a larger buffer).
  at::Tensor big = at::zeros({2 * 3 * w});
  at::Tensor strided = big.slice(0, 0, 2 * 3 * w, 2);
  world().all_gather(strided, at::full({3}, static_cast<double>(r)));
  for (int q = 0; q < w; ++q)
    EXPECT_TRUE(at::equal(strided.narrow(0, 3 * q, 3), at::full({3}, static_cast<double>(q))));
  EXPECT_TRUE(at::equal(big.slice(0, 1, 2 * 3 * w, 2), at::zeros({3 * w})));
  // reduce_scatter from a non-contiguous input.
  at::Tensor in2 = at::ones({w, 5}).t();
  at::Tensor out2 = at::empty({5});
  world().reduce_scatter(out2, in2, ReduceOp::kSum);
  EXPECT_TRUE(at::equal(out2, at::full({5}, static_cast<double>(w))));
}

TEST(Collectives, NonBlockingHandlesCompleteInAnyWaitOrder) {
  const int w = world().size(), r = world().rank();
  at::Tensor a = at::full({100}, static_cast<double>(r + 1));
  at::Tensor g_in = at::full({7}, static_cast<double>(r));
  at::Tensor g_out = at::empty({7 * w});
  at::Tensor b = at::full({9}, static_cast<double>(r)).to(at::kBFloat16);
  WorkPtr h1 = world().iall_reduce(a, ReduceOp::kSum);
  WorkPtr h2 = world().iall_gather(g_out, g_in);
  WorkPtr h3 = world().iall_reduce(b, ReduceOp::kMax);
  WorkPtr h4 = world().ibarrier();
  h4->wait();
  h3->wait();
  h2->wait();
  h1->wait();
  h1->wait();  // waiting twice is harmless
  EXPECT_TRUE(at::equal(a, at::full({100}, static_cast<double>(w * (w + 1) / 2))));
  EXPECT_TRUE(at::equal(b, at::full({9}, static_cast<double>(w - 1)).to(at::kBFloat16)));
  for (int q = 0; q < w; ++q) EXPECT_TRUE(at::equal(g_out.narrow(0, 7 * q, 7), at::full({7}, static_cast<double>(q))));
}

// Argument errors are detected before any message is sent, identically on every rank, so the
// error is a CommError everywhere and nobody hangs.
TEST(Collectives, BadArgumentsAreCommErrors) {
  const int w = world().size();
  auto expect_comm_error = [](auto&& call, const std::string& needle) {
    try {
      call();
      ADD_FAILURE() << "expected CommError containing '" << needle << "'";
    } catch (const CommError& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("rank"), std::string::npos) << e.what();
    }
  };
  at::Tensor out = at::empty({3});
  at::Tensor wrong = at::empty({3 * w + 1});
  expect_comm_error([&] { world().reduce_scatter(out, wrong, ReduceOp::kSum); }, "reduce_scatter");
  expect_comm_error([&] { world().all_gather(wrong, out); }, "all_gather");
  at::Tensor ints = at::ones({4}, at::kLong);
  expect_comm_error([&] { world().all_reduce(ints, ReduceOp::kAvg); }, "avg needs a floating dtype");
  at::Tensor i32 = at::ones({4}, at::kInt);
  expect_comm_error([&] { world().all_reduce(i32, ReduceOp::kSum); }, "not supported");
  at::Tensor t = at::ones({4});
  expect_comm_error([&] { world().broadcast(t, w); }, "root");
  std::vector<int64_t> short_counts(static_cast<size_t>(w + 1), 0);
  at::Tensor empty = at::empty({0});
  expect_comm_error([&] { world().all_to_all(empty, empty, short_counts, short_counts); }, "one per rank");
  std::vector<int64_t> counts(static_cast<size_t>(w), 1);
  at::Tensor one_too_many = at::ones({w + 1});
  expect_comm_error([&] { world().all_to_all(empty, one_too_many, counts, counts); }, "send_counts sum");
  at::Tensor exact = at::ones({w});
  expect_comm_error([&] { world().all_to_all(empty, exact, counts, counts); }, "recv_counts sum");
  at::Tensor undefined;
  expect_comm_error([&] { world().all_reduce(undefined, ReduceOp::kSum); }, "undefined");
  world().barrier();  // everyone is still in step
}

TEST(ByteCounters, RecordEveryCollectiveExactly) {
  const int w = world().size(), r = world().rank();
  auto comm = world().split(0, r, "accounting");  // a fresh group with fresh counters
  EXPECT_EQ(comm->stats().bytes_sent(), 0);
  at::Tensor a = at::zeros({1000});  // 4000 bytes
  comm->all_reduce(a, ReduceOp::kSum);
  at::Tensor rs_out = at::empty({250}, at::kBFloat16);  // shard of 500 bytes
  comm->reduce_scatter(rs_out, at::zeros({250 * w}, at::kBFloat16), ReduceOp::kSum);
  at::Tensor ag_out = at::empty({64 * w}, at::kDouble);  // shard of 512 bytes
  comm->all_gather(ag_out, at::zeros({64}, at::kDouble));
  at::Tensor bc = at::zeros({10}, at::kLong);  // 80 bytes
  comm->broadcast(bc, 0);
  std::vector<int64_t> send(w), recv(w);
  for (int d = 0; d < w; ++d) {
    send[d] = a2a_count(r, d);
    recv[d] = a2a_count(d, r);
  }
  at::Tensor a2a_out = at::empty({std::accumulate(recv.begin(), recv.end(), int64_t{0})});
  comm->all_to_all(a2a_out, at::zeros({std::accumulate(send.begin(), send.end(), int64_t{0})}), send, recv);
  comm->barrier();
  const auto& s = comm->stats().by_op;
  EXPECT_EQ(s.at("all_reduce").calls, 1);
  EXPECT_EQ(s.at("all_reduce").bytes_sent, w > 1 ? 2 * (w - 1) * 4000 / w : 0);
  EXPECT_EQ(s.at("reduce_scatter").bytes_sent, (w - 1) * 500);
  EXPECT_EQ(s.at("reduce_scatter").bytes_received, (w - 1) * 500);
  EXPECT_EQ(s.at("all_gather").bytes_received, (w - 1) * 512);
  EXPECT_EQ(s.at("broadcast").bytes_sent, (r == 0 && w > 1) ? 80 : 0);
  EXPECT_EQ(s.at("broadcast").bytes_received, (r != 0) ? 80 : 0);
  EXPECT_EQ(s.at("all_to_all").bytes_sent, 4 * (std::accumulate(send.begin(), send.end(), int64_t{0}) - send[r]));
  EXPECT_EQ(s.at("all_to_all").bytes_received, 4 * (std::accumulate(recv.begin(), recv.end(), int64_t{0}) - recv[r]));
  EXPECT_EQ(s.at("barrier").calls, 1);
  // The parent's counters did not see the child's traffic.
  const int64_t world_before = world().stats().by_op["all_reduce"].calls;
  comm->all_reduce(a, ReduceOp::kSum);
  EXPECT_EQ(world().stats().by_op["all_reduce"].calls, world_before);
}

TEST(ProcessGrid, MembershipsMatchMegatronOrder) {
  const int w = world().size(), r = world().rank();
  for (int tp = 1; tp <= w; ++tp) {
    if (w % tp != 0) continue;
    ProcessGrid grid(world(), tp);
    EXPECT_EQ(grid.tp().size(), tp);
    EXPECT_EQ(grid.dp().size(), w / tp);
    EXPECT_EQ(grid.coords().tp_rank, r % tp);
    EXPECT_EQ(grid.coords().dp_rank, r / tp);
    EXPECT_EQ(grid.tp().rank(), grid.coords().tp_rank);
    EXPECT_EQ(grid.dp().rank(), grid.coords().dp_rank);
    // Gather world ranks inside each group: they must be the members the arithmetic predicts.
    for (auto [comm, expected] : {std::make_pair(&grid.tp(), tp_group_ranks(r, grid.shape())),
                                  std::make_pair(&grid.dp(), dp_group_ranks(r, grid.shape()))}) {
      at::Tensor members = at::empty({comm->size()}, at::kLong);
      comm->all_gather(members, at::full({1}, static_cast<int64_t>(r), at::kLong));
      std::vector<int> got(members.data_ptr<int64_t>(), members.data_ptr<int64_t>() + members.numel());
      EXPECT_EQ(got, expected) << comm->name() << " group of rank " << r << " at tp=" << tp;
    }
  }
}

}  // namespace
}  // namespace orthotron
