// mpi_communicator.h: the MPI backend of Communicator, for CPU tensors (float32, float64,
// bfloat16 and float16 through fp32 reductions, int64). Non-blocking collectives are MPI-3
// MPI_I* calls; wait() polls MPI_Test under the communicator's timeout.
#pragma once

#include <mpi.h>

#include <memory>
#include <string>
#include <vector>

#include "parallel/communicator.h"

namespace orthotron {

class MpiCommunicator : public Communicator {
 public:
  /// Takes ownership of `comm` (freed on destruction unless it is MPI_COMM_WORLD/SELF).
  MpiCommunicator(MPI_Comm comm, std::string name);
  ~MpiCommunicator() override;

  std::string backend() const override { return "mpi"; }
  at::Device device() const override { return at::Device(at::kCPU); }
  std::unique_ptr<Communicator> split(int color, int key, const std::string& name) override;
  MPI_Comm mpi_comm() const { return comm_; }

 protected:
  WorkPtr do_all_reduce(at::Tensor& tensor, ReduceOp op) override;
  WorkPtr do_reduce_scatter(at::Tensor& output, const at::Tensor& input, ReduceOp op) override;
  WorkPtr do_all_gather(at::Tensor& output, const at::Tensor& input) override;
  WorkPtr do_all_to_all(at::Tensor& output, const at::Tensor& input, const std::vector<int64_t>& send_counts,
                        const std::vector<int64_t>& recv_counts) override;
  WorkPtr do_broadcast(at::Tensor& tensor, int root) override;
  WorkPtr do_barrier() override;

 private:
  WorkPtr make_work(MPI_Request request, const std::string& op, int64_t bytes, std::vector<at::Tensor> keep_alive);
  /// `numel` elements of a reduce-scatter receive buffer no pending collective uses. Buffers are
  /// kept and reused (with a fresh allocation per call, 256 MiB at 2 ranks took 260 ms; pooled, 83), so
  /// the pool holds as much as the reduce-scatters ever in flight at once.
  at::Tensor receive_buffer(int64_t numel, const at::TensorOptions& options);
  MPI_Comm comm_;
  std::vector<at::Tensor> receive_buffers_;
};

/// Throws CommError naming `what` and MPI's error string unless `code` is MPI_SUCCESS.
void check_mpi(int code, const std::string& what);

}  // namespace orthotron
