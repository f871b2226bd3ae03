// communicator.cpp: argument checks, contiguous staging and byte accounting shared by every backend.
#include "parallel/communicator.h"

#include <cstdlib>
#include <numeric>
#include <sstream>

#include "base/errors.h"
#include "parallel/dist_env.h"

namespace orthotron {

std::string to_string(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum:
      return "sum";
    case ReduceOp::kAvg:
      return "avg";
    case ReduceOp::kMax:
      return "max";
  }
  return "?";
}

int64_t CommStats::bytes_sent() const {
  int64_t n = 0;
  for (const auto& [op, s] : by_op) n += s.bytes_sent;
  return n;
}

int64_t CommStats::bytes_received() const {
  int64_t n = 0;
  for (const auto& [op, s] : by_op) n += s.bytes_received;
  return n;
}

std::string CommStats::to_string() const {
  std::ostringstream out;
  for (const auto& [op, s] : by_op) {
    out << op << ": calls " << s.calls << ", bytes sent " << s.bytes_sent << ", bytes received " << s.bytes_received
        << "\n";
  }
  return out.str();
}

FinishingWork::~FinishingWork() {
  if (inner_) {
    try {
      wait();
    } catch (...) {
      // A destructor must not throw; the error was already fatal to the collective.
    }
  }
}

void FinishingWork::wait() {
  if (!inner_) return;
  inner_->wait();
  inner_.reset();
  if (finish_) finish_();
}

bool FinishingWork::test() {
  if (!inner_) return true;
  if (!inner_->test()) return false;
  inner_.reset();
  if (finish_) finish_();
  return true;
}

std::chrono::milliseconds default_comm_timeout() {
  if (const char* v = std::getenv("ORTHOTRON_COMM_TIMEOUT_S")) {
    char* end = nullptr;
    const double s = std::strtod(v, &end);
    if (*end == '\0' && s > 0) return std::chrono::milliseconds(static_cast<int64_t>(s * 1000));
    throw InvalidArgument(std::string("ORTHOTRON_COMM_TIMEOUT_S='") + v + "' is not a positive number of seconds");
  }
  return std::chrono::milliseconds(600 * 1000);
}

Communicator::Communicator(int rank, int size, std::string name)
    : rank_(rank), size_(size), name_(std::move(name)), timeout_(default_comm_timeout()) {}

std::string Communicator::who() const {
  return "rank " + std::to_string(rank_) + " of '" + name_ + "' (" + backend() + ", size " + std::to_string(size_) +
         ") on " + host_name();
}

void Communicator::check_tensor(const char* op, const char* role, const at::Tensor& t) const {
  if (!t.defined()) throw CommError(std::string(op) + ": " + role + " tensor is undefined on " + who());
  const auto dt = t.scalar_type();
  if (dt != at::kFloat && dt != at::kDouble && dt != at::kBFloat16 && dt != at::kHalf && dt != at::kLong) {
    throw CommError(std::string(op) + ": " + role + " dtype " + c10::toString(dt) + " is not supported on " + who() +
                    " (float32, float64, bfloat16, float16, int64)");
  }
  if (t.device().type() != device().type()) {
    throw CommError(std::string(op) + ": " + role + " tensor is on " + t.device().str() + " but " + who() +
                    " moves tensors on " + device().str());
  }
}

void Communicator::record(const char* op, int64_t sent, int64_t received) {
  OpStats& s = stats_.by_op[op];
  s.calls += 1;
  s.bytes_sent += sent;
  s.bytes_received += received;
}

namespace {

// A contiguous tensor to hand the backend; when `t` is not contiguous, a copy whose result is
// written back into `t` by the returned finisher (empty otherwise).
std::pair<at::Tensor, std::function<void()>> stage_output(at::Tensor& t) {
  if (t.is_contiguous()) return {t, nullptr};
  at::Tensor staged = t.contiguous();
  at::Tensor target = t;
  return {staged, [staged, target]() mutable { target.copy_(staged); }};
}

WorkPtr finish_with(WorkPtr work, std::function<void()> finish) {
  if (!finish) return work;
  return std::make_unique<FinishingWork>(std::move(work), std::move(finish));
}

void check_avg(const char* op, ReduceOp rop, const at::Tensor& t, const std::string& who) {
  if (rop == ReduceOp::kAvg && !at::isFloatingType(t.scalar_type())) {
    throw CommError(std::string(op) + ": avg needs a floating dtype, got " + c10::toString(t.scalar_type()) + " on " +
                    who);
  }
}

}  // namespace

WorkPtr Communicator::iall_reduce(at::Tensor& tensor, ReduceOp op) {
  check_tensor("all_reduce", "in/out", tensor);
  check_avg("all_reduce", op, tensor, who());
  const int64_t bytes = tensor.numel() * static_cast<int64_t>(tensor.element_size());
  const int64_t moved = size_ > 1 ? 2 * (size_ - 1) * bytes / size_ : 0;
  record("all_reduce", moved, moved);
  auto [staged, finish] = stage_output(tensor);
  return finish_with(do_all_reduce(staged, op), finish);
}

WorkPtr Communicator::ireduce_scatter(at::Tensor& output, const at::Tensor& input, ReduceOp op) {
  check_tensor("reduce_scatter", "output", output);
  check_tensor("reduce_scatter", "input", input);
  check_avg("reduce_scatter", op, input, who());
  if (input.scalar_type() != output.scalar_type() || input.numel() != output.numel() * size_) {
    throw CommError("reduce_scatter: input " + std::string(c10::toString(input.scalar_type())) + " with " +
                    std::to_string(input.numel()) + " elements must be " + c10::toString(output.scalar_type()) +
                    " with size x output = " + std::to_string(size_) + " x " + std::to_string(output.numel()) +
                    " elements, on " + who());
  }
  const int64_t shard = output.numel() * static_cast<int64_t>(output.element_size());
  record("reduce_scatter", (size_ - 1) * shard, (size_ - 1) * shard);
  auto [staged, finish] = stage_output(output);
  return finish_with(do_reduce_scatter(staged, input.contiguous(), op), finish);
}

WorkPtr Communicator::iall_gather(at::Tensor& output, const at::Tensor& input) {
  check_tensor("all_gather", "output", output);
  check_tensor("all_gather", "input", input);
  if (input.scalar_type() != output.scalar_type() || output.numel() != input.numel() * size_) {
    throw CommError("all_gather: output " + std::string(c10::toString(output.scalar_type())) + " with " +
                    std::to_string(output.numel()) + " elements must be " + c10::toString(input.scalar_type()) +
                    " with size x input = " + std::to_string(size_) + " x " + std::to_string(input.numel()) +
                    " elements, on " + who());
  }
  const int64_t shard = input.numel() * static_cast<int64_t>(input.element_size());
  record("all_gather", (size_ - 1) * shard, (size_ - 1) * shard);
  auto [staged, finish] = stage_output(output);
  return finish_with(do_all_gather(staged, input.contiguous()), finish);
}

WorkPtr Communicator::iall_to_all(at::Tensor& output, const at::Tensor& input, const std::vector<int64_t>& send_counts,
                                  const std::vector<int64_t>& recv_counts) {
  check_tensor("all_to_all", "output", output);
  check_tensor("all_to_all", "input", input);
  auto bad = [&](const std::string& what) { throw CommError("all_to_all: " + what + " on " + who()); };
  if (input.scalar_type() != output.scalar_type()) bad("input and output dtypes differ");
  if (static_cast<int>(send_counts.size()) != size_ || static_cast<int>(recv_counts.size()) != size_) {
    bad("send_counts has " + std::to_string(send_counts.size()) + " and recv_counts " +
        std::to_string(recv_counts.size()) + " entries, expected one per rank (" + std::to_string(size_) + ")");
  }
  for (int j = 0; j < size_; ++j) {
    if (send_counts[j] < 0 || recv_counts[j] < 0) bad("negative count for rank " + std::to_string(j));
  }
  const int64_t send_total = std::accumulate(send_counts.begin(), send_counts.end(), int64_t{0});
  const int64_t recv_total = std::accumulate(recv_counts.begin(), recv_counts.end(), int64_t{0});
  if (send_total != input.numel()) {
    bad("send_counts sum to " + std::to_string(send_total) + " but input has " + std::to_string(input.numel()) +
        " elements");
  }
  if (recv_total != output.numel()) {
    bad("recv_counts sum to " + std::to_string(recv_total) + " but output has " + std::to_string(output.numel()) +
        " elements");
  }
  const int64_t es = static_cast<int64_t>(input.element_size());
  record("all_to_all", (send_total - send_counts[rank_]) * es, (recv_total - recv_counts[rank_]) * es);
  auto [staged, finish] = stage_output(output);
  return finish_with(do_all_to_all(staged, input.contiguous(), send_counts, recv_counts), finish);
}

WorkPtr Communicator::ibroadcast(at::Tensor& tensor, int root) {
  check_tensor("broadcast", "in/out", tensor);
  if (root < 0 || root >= size_) {
    throw CommError("broadcast: root " + std::to_string(root) + " is outside [0, " + std::to_string(size_) + ") on " +
                    who());
  }
  const int64_t bytes = size_ > 1 ? tensor.numel() * static_cast<int64_t>(tensor.element_size()) : 0;
  record("broadcast", rank_ == root ? bytes : 0, rank_ == root ? 0 : bytes);
  auto [staged, finish] = stage_output(tensor);
  return finish_with(do_broadcast(staged, root), finish);
}

WorkPtr Communicator::ibarrier() {
  record("barrier", 0, 0);
  return do_barrier();
}

}  // namespace orthotron
