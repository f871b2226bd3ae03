// nccl_communicator.h: the NCCL backend of Communicator, for CUDA tensors. Bootstrapped over MPI
// (rank 0's ncclUniqueId broadcast), one ncclComm_t per process group, collectives enqueued on the
// current torch CUDA stream, every ncclResult_t checked, and a watchdog in wait() that aborts the
// communicator and the job when a collective outlives the timeout. Built only with ORTHOTRON_WITH_CUDA.
#pragma once

#include <cuda_runtime_api.h>
#include <nccl.h>

#include <memory>
#include <string>

#include "parallel/communicator.h"

namespace orthotron {

class NcclCommunicator : public Communicator {
 public:
  /// Creates an NCCL communicator over the same ranks as `bootstrap` (an MPI communicator):
  /// rank 0 makes the unique id, `bootstrap` broadcasts it, every rank selects GPU `device_index`
  /// (its local rank) and joins with ncclCommInitRank. Collective over `bootstrap`; blocking.
  static std::unique_ptr<NcclCommunicator> create(Communicator& bootstrap, int device_index, const std::string& name);

  NcclCommunicator(ncclComm_t comm, int rank, int size, int device_index, std::string name);
  ~NcclCommunicator() override;

  std::string backend() const override { return "nccl"; }
  at::Device device() const override { return at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(device_)); }
  /// ncclCommSplit; collective over this communicator.
  std::unique_ptr<Communicator> split(int color, int key, const std::string& name) override;
  ncclComm_t nccl_comm() const { return comm_; }

 protected:
  WorkPtr do_all_reduce(at::Tensor& tensor, ReduceOp op) override;
  WorkPtr do_reduce_scatter(at::Tensor& output, const at::Tensor& input, ReduceOp op) override;
  WorkPtr do_all_gather(at::Tensor& output, const at::Tensor& input) override;
  WorkPtr do_all_to_all(at::Tensor& output, const at::Tensor& input, const std::vector<int64_t>& send_counts,
                        const std::vector<int64_t>& recv_counts) override;
  WorkPtr do_broadcast(at::Tensor& tensor, int root) override;
  WorkPtr do_barrier() override;

 private:
  /// Records an event on `stream` after the enqueued collective and returns its watchdog handle.
  WorkPtr make_work(cudaStream_t stream, const std::string& op, int64_t bytes, std::vector<at::Tensor> keep_alive);
  void check(ncclResult_t r, const std::string& what) const;

  ncclComm_t comm_;
  int device_;
};

}  // namespace orthotron
