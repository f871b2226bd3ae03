// intra_op_threads.cpp: the parallel_for probe (see the header).
#include "base/intra_op_threads.h"

#include <ATen/Parallel.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <set>
#include <thread>

namespace orthotron {

int intra_op_threads_reached() {
  const int threads = at::get_num_threads();
  std::mutex mutex;
  std::set<std::thread::id> seen;
  std::atomic<int> arrived{0};
  at::parallel_for(0, threads, 1, [&](int64_t begin, int64_t end) {
    {
      const std::lock_guard<std::mutex> lock(mutex);
      seen.insert(std::this_thread::get_id());
    }
    // Hold each unit until every unit has started or 100 ms pass, so one fast thread cannot run
    // them all in turn (a parallel region hands each thread its own range; this only guards the
    // count against a runtime that would not).
    arrived += static_cast<int>(end - begin);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(100);
    while (arrived.load() < threads && std::chrono::steady_clock::now() < deadline) std::this_thread::yield();
  });
  return static_cast<int>(seen.size());
}

}  // namespace orthotron
