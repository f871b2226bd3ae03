// communicator.h: the Communicator interface over at::Tensor (all_reduce, reduce_scatter,
// all_gather, all_to_all with uneven splits, broadcast, barrier; blocking and non-blocking), its
// argument checks, and its byte accounting. Backends (MPI for CPU tensors, NCCL for CUDA tensors)
// implement the do_* hooks. Depends on LibTorch only.
#pragma once

#include <ATen/ATen.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace orthotron {

enum class ReduceOp { kSum, kAvg, kMax };
std::string to_string(ReduceOp op);

/// Calls and bytes of one collective kind on one communicator, on this rank.
struct OpStats {
  int64_t calls = 0;
  int64_t bytes_sent = 0;
  int64_t bytes_received = 0;
};

/// Byte accounting of one communicator (one process group) on this rank. The bytes are the
/// algorithm-independent traffic each rank must move (nccl-tests' "bus" convention), computed from
/// the arguments, so they are deterministic and equal on every backend. For W ranks:
///   all_reduce of n bytes:            sent = received = 2 (W-1) n / W
///   reduce_scatter, input W*S bytes:  sent = received = (W-1) S
///   all_gather, output W*S bytes:     sent = received = (W-1) S
///   all_to_all:                       sent = bytes sent to other ranks, received = bytes from others
///   broadcast of n bytes:             root sends n, every other rank receives n
///   barrier:                          0
struct CommStats {
  std::map<std::string, OpStats> by_op;  ///< keyed "all_reduce", "reduce_scatter", ...
  int64_t bytes_sent() const;
  int64_t bytes_received() const;
  void reset() { by_op.clear(); }
  /// One line per operation: calls, bytes sent, bytes received.
  std::string to_string() const;
};

/// Handle of a non-blocking collective. wait() blocks the calling host thread until the result is
/// in the output tensor; it throws CommError on a backend error and, past the communicator's
/// timeout, aborts the whole job (MPI_Abort) with a message naming rank, host, operation and size.
/// Destroying a handle without wait() waits.
class Work {
 public:
  virtual ~Work() = default;
  virtual void wait() = 0;
  /// Non-blocking: drives the backend's progress once (MPI progresses a non-blocking collective
  /// only inside MPI calls) and returns whether the result is in place, as after wait(). Once it
  /// returned true, wait() returns at once. Throws CommError on a backend error; never times out.
  virtual bool test() = 0;
};
using WorkPtr = std::unique_ptr<Work>;

/// A Work that runs `finish` after `inner` completes (copy-back of non-contiguous outputs,
/// bf16 conversion, division for avg). The hook runs exactly once.
class FinishingWork : public Work {
 public:
  FinishingWork(WorkPtr inner, std::function<void()> finish) : inner_(std::move(inner)), finish_(std::move(finish)) {}
  ~FinishingWork() override;
  void wait() override;
  bool test() override;

 private:
  WorkPtr inner_;
  std::function<void()> finish_;
};

/// A group of ranks that run collectives together. Every function is collective: every rank of
/// the communicator must call it, in the same order, with matching dtypes and sizes. Tensors may
/// be non-contiguous (they are staged through contiguous copies); they must live on this
/// backend's device. Supported dtypes: float32, float64, bfloat16, float16, int64 (avg only for
/// floating types). Errors in the arguments are CommError naming the operation, rank and sizes.
class Communicator {
 public:
  virtual ~Communicator() = default;
  Communicator(const Communicator&) = delete;
  Communicator& operator=(const Communicator&) = delete;

  int rank() const { return rank_; }
  int size() const { return size_; }
  /// The group's name ("world", "tp", "dp", ...), used in messages and byte accounting.
  const std::string& name() const { return name_; }
  virtual std::string backend() const = 0;
  /// The device whose tensors this backend moves (CPU for MPI, the local GPU for NCCL).
  virtual at::Device device() const = 0;

  /// In-place reduction of `tensor` across ranks. Non-blocking: the result is valid after wait().
  WorkPtr iall_reduce(at::Tensor& tensor, ReduceOp op);
  /// `input` holds size()*output.numel() elements; rank r receives the reduction of its r-th block.
  WorkPtr ireduce_scatter(at::Tensor& output, const at::Tensor& input, ReduceOp op);
  /// `output` holds size()*input.numel() elements; block r is rank r's input.
  WorkPtr iall_gather(at::Tensor& output, const at::Tensor& input);
  /// Uneven all-to-all over flat element order: the first send_counts[0] elements of `input` go to
  /// rank 0, the next send_counts[1] to rank 1, ...; block j of `output` (recv_counts[j] elements)
  /// comes from rank j. Counts are elements, one per rank; recv_counts[j] must equal what rank j
  /// sends here.
  WorkPtr iall_to_all(at::Tensor& output, const at::Tensor& input, const std::vector<int64_t>& send_counts,
                      const std::vector<int64_t>& recv_counts);
  /// In-place broadcast of `tensor` from `root`.
  WorkPtr ibroadcast(at::Tensor& tensor, int root);
  WorkPtr ibarrier();

  /// Blocking forms: the non-blocking call followed by wait().
  void all_reduce(at::Tensor& tensor, ReduceOp op) { iall_reduce(tensor, op)->wait(); }
  void reduce_scatter(at::Tensor& output, const at::Tensor& input, ReduceOp op) {
    ireduce_scatter(output, input, op)->wait();
  }
  void all_gather(at::Tensor& output, const at::Tensor& input) { iall_gather(output, input)->wait(); }
  void all_to_all(at::Tensor& output, const at::Tensor& input, const std::vector<int64_t>& send_counts,
                  const std::vector<int64_t>& recv_counts) {
    iall_to_all(output, input, send_counts, recv_counts)->wait();
  }
  void broadcast(at::Tensor& tensor, int root) { ibroadcast(tensor, root)->wait(); }
  void barrier() { ibarrier()->wait(); }

  /// Splits this communicator (MPI_Comm_split semantics: same color -> same group, ordered by key).
  /// Collective over this communicator. The child has its own byte accounting and inherits the timeout.
  virtual std::unique_ptr<Communicator> split(int color, int key, const std::string& name) = 0;

  CommStats& stats() { return stats_; }
  const CommStats& stats() const { return stats_; }
  /// How long wait() may block before the job is aborted (default: ORTHOTRON_COMM_TIMEOUT_S or 600 s).
  void set_timeout(std::chrono::milliseconds timeout) { timeout_ = timeout; }
  std::chrono::milliseconds timeout() const { return timeout_; }

 protected:
  Communicator(int rank, int size, std::string name);

  // Backend hooks: tensors are contiguous, on device(), of a supported dtype, with sizes checked.
  virtual WorkPtr do_all_reduce(at::Tensor& tensor, ReduceOp op) = 0;
  virtual WorkPtr do_reduce_scatter(at::Tensor& output, const at::Tensor& input, ReduceOp op) = 0;
  virtual WorkPtr do_all_gather(at::Tensor& output, const at::Tensor& input) = 0;
  virtual WorkPtr do_all_to_all(at::Tensor& output, const at::Tensor& input, const std::vector<int64_t>& send_counts,
                                const std::vector<int64_t>& recv_counts) = 0;
  virtual WorkPtr do_broadcast(at::Tensor& tensor, int root) = 0;
  virtual WorkPtr do_barrier() = 0;

  /// "rank R of 'name' (backend) on HOST" for messages.
  std::string who() const;

 private:
  void check_tensor(const char* op, const char* role, const at::Tensor& t) const;
  void record(const char* op, int64_t sent, int64_t received);

  int rank_;
  int size_;
  std::string name_;
  CommStats stats_;
  std::chrono::milliseconds timeout_;
};

/// The default collective timeout: ORTHOTRON_COMM_TIMEOUT_S seconds when set, else 600 s.
std::chrono::milliseconds default_comm_timeout();

}  // namespace orthotron
