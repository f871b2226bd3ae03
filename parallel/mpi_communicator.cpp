// mpi_communicator.cpp: Communicator over MPI for CPU tensors.
#include "parallel/mpi_communicator.h"

#include <chrono>
#include <functional>
#include <sstream>
#include <thread>
#include <tuple>

#include "base/errors.h"
#include "parallel/dist_env.h"
#include "parallel/mpi_runtime.h"

namespace orthotron {

void check_mpi(int code, const std::string& what) {
  if (code == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING] = {0};
  int len = 0;
  MPI_Error_string(code, text, &len);
  throw CommError(what + " failed: " + std::string(text, static_cast<size_t>(len)));
}

namespace {

// MPI has no bf16/fp16: reductions run on an fp32 copy (one rounding at the end, so the result is
// the correctly rounded fp32 sum); data movement sends the raw 16-bit words.
bool needs_fp32_staging(const at::Tensor& t) {
  return t.scalar_type() == at::kBFloat16 || t.scalar_type() == at::kHalf;
}

MPI_Datatype mpi_type(at::ScalarType t) {
  switch (t) {
    case at::kFloat:
      return MPI_FLOAT;
    case at::kDouble:
      return MPI_DOUBLE;
    case at::kLong:
      return MPI_INT64_T;
    case at::kBFloat16:
    case at::kHalf:
      return MPI_UINT16_T;
    default:
      throw CommError(std::string("MPI backend has no datatype for ") + c10::toString(t));
  }
}

MPI_Op mpi_op(ReduceOp op) {
  return op == ReduceOp::kMax ? MPI_MAX : MPI_SUM;
}

int mpi_count(int64_t n, const std::string& op) {
  if (n > INT32_MAX) {
    throw CommError(op + ": " + std::to_string(n) + " elements exceed MPI's int count limit; split the tensor");
  }
  return static_cast<int>(n);
}

// Blocks until `test()` returns true. Polls at full speed for the first 20 ms: a collective in
// flight progresses only inside MPI calls, and sleeping 50 us between single polls throttled
// transfers (a 1 MiB reduce-scatter took 2.1 ms instead of 0.19 ms at 2 ranks). After that the wait is for a peer
// still computing: bursts of 64 polls, then a 50 us sleep, so a waiting rank does not starve a
// rank sharing its core. Past `timeout` the job is aborted with `description`.
void wait_polling(const std::function<bool()>& test, const std::string& description,
                  std::chrono::milliseconds timeout) {
  constexpr auto kSpinFor = std::chrono::milliseconds(20);
  const auto start = std::chrono::steady_clock::now();
  for (int64_t polls = 0;; ++polls) {
    if (test()) return;
    if ((polls & 63) != 63) continue;
    const auto waited = std::chrono::steady_clock::now() - start;
    if (waited > timeout) {
      abort_job(description + " did not complete within " + std::to_string(timeout.count() / 1000.0) +
                    " s (a peer rank is missing, hung, or issued a different collective); aborting the job",
                3);
    }
    if (waited > kSpinFor) std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
}

// A pending MPI request; `keep_alive` holds the buffers MPI reads or writes until completion.
class MpiWork : public Work {
 public:
  MpiWork(MPI_Request request, std::string description, std::chrono::milliseconds timeout,
          std::vector<at::Tensor> keep_alive)
      : request_(request),
        description_(std::move(description)),
        timeout_(timeout),
        keep_alive_(std::move(keep_alive)) {}
  ~MpiWork() override {
    if (request_ != MPI_REQUEST_NULL) {
      try {
        wait();
      } catch (...) {
      }
    }
  }
  void wait() override {
    wait_polling([this] { return test(); }, description_, timeout_);
  }
  bool test() override {
    if (request_ == MPI_REQUEST_NULL) return true;
    int done = 0;
    check_mpi(MPI_Test(&request_, &done, MPI_STATUS_IGNORE), description_);
    if (!done) return false;
    request_ = MPI_REQUEST_NULL;
    keep_alive_.clear();
    return true;
  }

 private:
  MPI_Request request_;
  std::string description_;
  std::chrono::milliseconds timeout_;
  std::vector<at::Tensor> keep_alive_;
};

// output <- the reduction of the W rows of `blocks` ([W, B], row q from rank q), added in rank
// order 0, 1, ..., W-1; bfloat16/float16 accumulate in float32 and round once.
void reduce_in_rank_order(const at::Tensor& blocks, at::Tensor& output, ReduceOp op) {
  const int64_t w = blocks.size(0);
  const bool widen = needs_fp32_staging(blocks);
  at::Tensor acc = widen ? blocks[0].to(at::kFloat) : output.copy_(blocks[0]);
  for (int64_t q = 1; q < w; ++q) {
    if (op == ReduceOp::kMax) {
      at::maximum_out(acc, acc, widen ? blocks[q].to(at::kFloat) : blocks[q]);
    } else {
      acc.add_(blocks[q]);
    }
  }
  if (op == ReduceOp::kAvg) acc.div_(w);
  if (widen) output.copy_(acc);
}

}  // namespace

MpiCommunicator::MpiCommunicator(MPI_Comm comm, std::string name)
    : Communicator(
          [&] {
            int r = 0;
            MPI_Comm_rank(comm, &r);
            return r;
          }(),
          [&] {
            int s = 0;
            MPI_Comm_size(comm, &s);
            return s;
          }(),
          std::move(name)),
      comm_(comm) {
  MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN);
}

MpiCommunicator::~MpiCommunicator() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized && comm_ != MPI_COMM_WORLD && comm_ != MPI_COMM_SELF && comm_ != MPI_COMM_NULL) MPI_Comm_free(&comm_);
}

std::unique_ptr<Communicator> MpiCommunicator::split(int color, int key, const std::string& name) {
  MPI_Comm child = MPI_COMM_NULL;
  check_mpi(MPI_Comm_split(comm_, color, key, &child),
            "split of '" + this->name() + "' into '" + name + "' on " + who());
  auto out = std::make_unique<MpiCommunicator>(child, name);
  out->set_timeout(timeout());
  return out;
}

WorkPtr MpiCommunicator::make_work(MPI_Request request, const std::string& op, int64_t bytes,
                                   std::vector<at::Tensor> keep_alive) {
  std::ostringstream d;
  d << op << " of " << bytes << " bytes on " << who();
  return std::make_unique<MpiWork>(request, d.str(), timeout(), std::move(keep_alive));
}

WorkPtr MpiCommunicator::do_all_reduce(at::Tensor& tensor, ReduceOp op) {
  at::Tensor buf = needs_fp32_staging(tensor) ? tensor.to(at::kFloat) : tensor;
  MPI_Request req = MPI_REQUEST_NULL;
  const std::string name = "all_reduce(" + to_string(op) + ")";
  check_mpi(MPI_Iallreduce(MPI_IN_PLACE, buf.data_ptr(), mpi_count(buf.numel(), name), mpi_type(buf.scalar_type()),
                           mpi_op(op), comm_, &req),
            name + " on " + who());
  WorkPtr work = make_work(req, name, tensor.numel() * tensor.element_size(), {buf});
  const bool staged = !buf.is_same(tensor);
  if (op != ReduceOp::kAvg && !staged) return work;
  const int n = size();
  at::Tensor target = tensor;
  return std::make_unique<FinishingWork>(std::move(work), [buf, target, op, n, staged]() mutable {
    if (op == ReduceOp::kAvg) buf.div_(n);
    if (staged) target.copy_(buf);
  });
}

// Built from one all-to-all plus a local reduction: rank q receives block q of every rank and adds
// them in rank order. The summation order is then fixed by the ranks alone, never by the message
// size or MPI's algorithm, and each rank moves the bandwidth-optimal (W-1)/W of the input. Open MPI
// 4.1's reduce_scatter_block took 2.6 to 3.2x as long on 128 MiB at 2 ranks (a C probe, best of 5).
// Receives into a buffer the size of `input` from receive_buffer().
WorkPtr MpiCommunicator::do_reduce_scatter(at::Tensor& output, const at::Tensor& input, ReduceOp op) {
  const std::string name = "reduce_scatter(" + to_string(op) + ")";
  const int64_t block = output.numel();
  at::Tensor received = receive_buffer(size() * block, input.options()).view({size(), block});
  const MPI_Datatype t = mpi_type(input.scalar_type());
  MPI_Request req = MPI_REQUEST_NULL;
  check_mpi(MPI_Ialltoall(input.data_ptr(), mpi_count(block, name), t, received.data_ptr(), mpi_count(block, name), t,
                          comm_, &req),
            name + " on " + who());
  WorkPtr work = make_work(req, name, input.numel() * input.element_size(), {input, received});
  at::Tensor target = output;
  return std::make_unique<FinishingWork>(
      std::move(work), [received, target, op]() mutable { reduce_in_rank_order(received, target, op); });
}

at::Tensor MpiCommunicator::receive_buffer(int64_t numel, const at::TensorOptions& options) {
  for (const at::Tensor& b : receive_buffers_) {
    // Free when only the pool references its storage (every work holding a view has finished).
    if (b.storage().use_count() == 1 && b.numel() >= numel && b.scalar_type() == options.dtype()) {
      return b.narrow(0, 0, numel);
    }
  }
  receive_buffers_.push_back(at::empty({numel}, options));
  return receive_buffers_.back();
}

WorkPtr MpiCommunicator::do_all_gather(at::Tensor& output, const at::Tensor& input) {
  MPI_Request req = MPI_REQUEST_NULL;
  const MPI_Datatype t = mpi_type(input.scalar_type());
  const int count = mpi_count(input.numel(), "all_gather");
  check_mpi(MPI_Iallgather(input.data_ptr(), count, t, output.data_ptr(), count, t, comm_, &req),
            "all_gather on " + who());
  return make_work(req, "all_gather", output.numel() * output.element_size(), {input, output});
}

WorkPtr MpiCommunicator::do_all_to_all(at::Tensor& output, const at::Tensor& input,
                                       const std::vector<int64_t>& send_counts,
                                       const std::vector<int64_t>& recv_counts) {
  const int n = size();
  // MPI may read the count and displacement arrays until completion: the work keeps them alive.
  auto arrays = std::make_shared<std::vector<std::vector<int>>>(4, std::vector<int>(n));
  auto [sc, sd, rc, rd] = std::tie((*arrays)[0], (*arrays)[1], (*arrays)[2], (*arrays)[3]);
  int64_t so = 0, ro = 0;
  for (int j = 0; j < n; ++j) {
    sc[j] = mpi_count(send_counts[j], "all_to_all");
    rc[j] = mpi_count(recv_counts[j], "all_to_all");
    sd[j] = mpi_count(so, "all_to_all");
    rd[j] = mpi_count(ro, "all_to_all");
    so += send_counts[j];
    ro += recv_counts[j];
  }
  const MPI_Datatype t = mpi_type(input.scalar_type());
  MPI_Request req = MPI_REQUEST_NULL;
  check_mpi(MPI_Ialltoallv(input.data_ptr(), sc.data(), sd.data(), t, output.data_ptr(), rc.data(), rd.data(), t, comm_,
                           &req),
            "all_to_all on " + who());
  WorkPtr work = make_work(req, "all_to_all", (so + ro) * input.element_size(), {input, output});
  return std::make_unique<FinishingWork>(std::move(work), [arrays]() {});
}

WorkPtr MpiCommunicator::do_broadcast(at::Tensor& tensor, int root) {
  MPI_Request req = MPI_REQUEST_NULL;
  check_mpi(MPI_Ibcast(tensor.data_ptr(), mpi_count(tensor.numel(), "broadcast"), mpi_type(tensor.scalar_type()), root,
                       comm_, &req),
            "broadcast on " + who());
  return make_work(req, "broadcast from rank " + std::to_string(root), tensor.numel() * tensor.element_size(),
                   {tensor});
}

WorkPtr MpiCommunicator::do_barrier() {
  MPI_Request req = MPI_REQUEST_NULL;
  check_mpi(MPI_Ibarrier(comm_, &req), "barrier on " + who());
  return make_work(req, "barrier", 0, {});
}

}  // namespace orthotron
