// nccl_communicator.cpp: Communicator over NCCL for CUDA tensors.
#include "parallel/nccl_communicator.h"

#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <chrono>
#include <cstring>
#include <sstream>
#include <thread>

#include "base/errors.h"
#include "parallel/dist_env.h"
#include "parallel/mpi_runtime.h"

namespace orthotron {

namespace {

ncclDataType_t nccl_type(at::ScalarType t) {
  switch (t) {
    case at::kFloat:
      return ncclFloat32;
    case at::kDouble:
      return ncclFloat64;
    case at::kBFloat16:
      return ncclBfloat16;
    case at::kHalf:
      return ncclFloat16;
    case at::kLong:
      return ncclInt64;
    default:
      throw CommError(std::string("NCCL backend has no datatype for ") + c10::toString(t));
  }
}

ncclRedOp_t nccl_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum:
      return ncclSum;
    case ReduceOp::kAvg:
      return ncclAvg;
    case ReduceOp::kMax:
      return ncclMax;
  }
  return ncclSum;
}

void check_cuda(cudaError_t e, const std::string& what) {
  if (e != cudaSuccess) throw CommError(what + " failed: " + cudaGetErrorString(e));
}

// Completion of one enqueued collective, tracked by a CUDA event. wait() polls the event and
// NCCL's asynchronous error; past the timeout it aborts the communicator, then the job.
class NcclWork : public Work {
 public:
  NcclWork(ncclComm_t comm, cudaEvent_t event, std::string description, std::chrono::milliseconds timeout,
           std::vector<at::Tensor> keep_alive)
      : comm_(comm),
        event_(event),
        description_(std::move(description)),
        timeout_(timeout),
        keep_alive_(std::move(keep_alive)) {}
  ~NcclWork() override {
    if (event_ != nullptr) {
      try {
        wait();
      } catch (...) {
      }
    }
  }
  void wait() override {
    if (event_ == nullptr) return;
    const auto start = std::chrono::steady_clock::now();
    while (!test()) {
      if (std::chrono::steady_clock::now() - start > timeout_) {
        ncclCommAbort(comm_);
        abort_job(description_ + " did not complete within " + std::to_string(timeout_.count() / 1000.0) +
                      " s (a peer rank is missing, hung, or issued a different collective); NCCL communicator "
                      "aborted",
                  3);
      }
      std::this_thread::sleep_for(std::chrono::microseconds(20));
    }
  }
  // One query of the event and of NCCL's asynchronous error; a CUDA or NCCL error aborts the
  // communicator, then the job.
  bool test() override {
    if (event_ == nullptr) return true;
    const cudaError_t q = cudaEventQuery(event_);
    if (q != cudaSuccess && q != cudaErrorNotReady) {
      ncclCommAbort(comm_);
      abort_job(description_ + ": CUDA error " + cudaGetErrorString(q), 4);
    }
    if (q == cudaErrorNotReady) {
      ncclResult_t async = ncclSuccess;
      ncclCommGetAsyncError(comm_, &async);
      if (async != ncclSuccess && async != ncclInProgress) {
        ncclCommAbort(comm_);
        abort_job(description_ + ": NCCL asynchronous error " + ncclGetErrorString(async), 4);
      }
      return false;
    }
    cudaEventDestroy(event_);
    event_ = nullptr;
    keep_alive_.clear();
    return true;
  }

 private:
  ncclComm_t comm_;
  cudaEvent_t event_;
  std::string description_;
  std::chrono::milliseconds timeout_;
  std::vector<at::Tensor> keep_alive_;
};

}  // namespace

std::unique_ptr<NcclCommunicator> NcclCommunicator::create(Communicator& bootstrap, int device_index,
                                                           const std::string& name) {
  check_cuda(cudaSetDevice(device_index), "cudaSetDevice(" + std::to_string(device_index) + ") on " + host_name());
  ncclUniqueId id;
  std::memset(&id, 0, sizeof id);
  static_assert(sizeof(ncclUniqueId) % sizeof(int64_t) == 0, "ncclUniqueId is not a whole number of int64 words");
  at::Tensor wire = at::zeros({static_cast<int64_t>(sizeof(ncclUniqueId) / sizeof(int64_t))}, at::kLong);
  if (bootstrap.rank() == 0) {
    const ncclResult_t r = ncclGetUniqueId(&id);
    if (r != ncclSuccess) throw CommError(std::string("ncclGetUniqueId failed: ") + ncclGetErrorString(r));
    std::memcpy(wire.data_ptr(), &id, sizeof id);
  }
  bootstrap.broadcast(wire, 0);
  std::memcpy(&id, wire.data_ptr(), sizeof id);
  ncclComm_t comm = nullptr;
  const ncclResult_t r = ncclCommInitRank(&comm, bootstrap.size(), id, bootstrap.rank());
  if (r != ncclSuccess) {
    throw CommError("ncclCommInitRank for '" + name + "' on rank " + std::to_string(bootstrap.rank()) + " (" +
                    host_name() + ", GPU " + std::to_string(device_index) + ") failed: " + ncclGetErrorString(r));
  }
  auto out = std::make_unique<NcclCommunicator>(comm, bootstrap.rank(), bootstrap.size(), device_index, name);
  out->set_timeout(bootstrap.timeout());
  return out;
}

NcclCommunicator::NcclCommunicator(ncclComm_t comm, int rank, int size, int device_index, std::string name)
    : Communicator(rank, size, std::move(name)), comm_(comm), device_(device_index) {}

NcclCommunicator::~NcclCommunicator() {
  if (comm_ != nullptr) ncclCommDestroy(comm_);
}

void NcclCommunicator::check(ncclResult_t r, const std::string& what) const {
  if (r == ncclSuccess) return;
  throw CommError(what + " on " + who() + " failed: " + ncclGetErrorString(r) + " (" + ncclGetLastError(comm_) + ")");
}

std::unique_ptr<Communicator> NcclCommunicator::split(int color, int key, const std::string& name) {
  ncclComm_t child = nullptr;
  check(ncclCommSplit(comm_, color, key, &child, nullptr), "ncclCommSplit into '" + name + "'");
  int rank = 0, size = 0;
  check(ncclCommUserRank(child, &rank), "ncclCommUserRank");
  check(ncclCommCount(child, &size), "ncclCommCount");
  auto out = std::make_unique<NcclCommunicator>(child, rank, size, device_, name);
  out->set_timeout(timeout());
  return out;
}

WorkPtr NcclCommunicator::make_work(cudaStream_t stream, const std::string& op, int64_t bytes,
                                    std::vector<at::Tensor> keep_alive) {
  cudaEvent_t event = nullptr;
  check_cuda(cudaEventCreateWithFlags(&event, cudaEventDisableTiming), "cudaEventCreate");
  check_cuda(cudaEventRecord(event, stream), "cudaEventRecord");
  std::ostringstream d;
  d << op << " of " << bytes << " bytes on " << who();
  return std::make_unique<NcclWork>(comm_, event, d.str(), timeout(), std::move(keep_alive));
}

WorkPtr NcclCommunicator::do_all_reduce(at::Tensor& tensor, ReduceOp op) {
  c10::cuda::CUDAGuard guard(tensor.device());
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream(tensor.device().index()).stream();
  check(ncclAllReduce(tensor.data_ptr(), tensor.data_ptr(), tensor.numel(), nccl_type(tensor.scalar_type()),
                      nccl_op(op), comm_, stream),
        "ncclAllReduce");
  return make_work(stream, "all_reduce(" + to_string(op) + ")", tensor.numel() * tensor.element_size(), {tensor});
}

WorkPtr NcclCommunicator::do_reduce_scatter(at::Tensor& output, const at::Tensor& input, ReduceOp op) {
  c10::cuda::CUDAGuard guard(output.device());
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream(output.device().index()).stream();
  check(ncclReduceScatter(input.data_ptr(), output.data_ptr(), output.numel(), nccl_type(output.scalar_type()),
                          nccl_op(op), comm_, stream),
        "ncclReduceScatter");
  return make_work(stream, "reduce_scatter(" + to_string(op) + ")", input.numel() * input.element_size(),
                   {input, output});
}

WorkPtr NcclCommunicator::do_all_gather(at::Tensor& output, const at::Tensor& input) {
  c10::cuda::CUDAGuard guard(output.device());
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream(output.device().index()).stream();
  check(
      ncclAllGather(input.data_ptr(), output.data_ptr(), input.numel(), nccl_type(input.scalar_type()), comm_, stream),
      "ncclAllGather");
  return make_work(stream, "all_gather", output.numel() * output.element_size(), {input, output});
}

WorkPtr NcclCommunicator::do_all_to_all(at::Tensor& output, const at::Tensor& input,
                                        const std::vector<int64_t>& send_counts,
                                        const std::vector<int64_t>& recv_counts) {
  c10::cuda::CUDAGuard guard(output.device());
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream(output.device().index()).stream();
  const ncclDataType_t t = nccl_type(input.scalar_type());
  const int64_t es = static_cast<int64_t>(input.element_size());
  char* in = static_cast<char*>(input.data_ptr());
  char* out = static_cast<char*>(output.data_ptr());
  int64_t so = 0, ro = 0;
  check(ncclGroupStart(), "ncclGroupStart");
  for (int j = 0; j < size(); ++j) {
    if (send_counts[j] > 0) check(ncclSend(in + so * es, send_counts[j], t, j, comm_, stream), "ncclSend");
    if (recv_counts[j] > 0) check(ncclRecv(out + ro * es, recv_counts[j], t, j, comm_, stream), "ncclRecv");
    so += send_counts[j];
    ro += recv_counts[j];
  }
  check(ncclGroupEnd(), "ncclGroupEnd");
  return make_work(stream, "all_to_all", (so + ro) * es, {input, output});
}

WorkPtr NcclCommunicator::do_broadcast(at::Tensor& tensor, int root) {
  c10::cuda::CUDAGuard guard(tensor.device());
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream(tensor.device().index()).stream();
  check(ncclBroadcast(tensor.data_ptr(), tensor.data_ptr(), tensor.numel(), nccl_type(tensor.scalar_type()), root,
                      comm_, stream),
        "ncclBroadcast");
  return make_work(stream, "broadcast from rank " + std::to_string(root), tensor.numel() * tensor.element_size(),
                   {tensor});
}

WorkPtr NcclCommunicator::do_barrier() {
  at::Tensor token = at::zeros({1}, at::TensorOptions().dtype(at::kFloat).device(device()));
  return do_all_reduce(token, ReduceOp::kSum);
}

}  // namespace orthotron
