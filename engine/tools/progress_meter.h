// progress_meter.h: the progress line of orthotron_preprocess on stderr: bytes done of the total,
// documents, tokens per second and the estimated time left. Depends on the standard library only.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace orthotron {

/// Redraws one stderr line in place ('\r') at most every `interval_s` seconds when stderr is a
/// terminal; otherwise prints a new line at most every `log_interval_s` seconds (logs stay short).
/// Not thread-safe: call from one thread.
class ProgressMeter {
 public:
  ProgressMeter(int64_t total_bytes, double interval_s = 0.25, double log_interval_s = 10.0);
  /// Reports the running totals; prints only when the interval has passed.
  void update(int64_t bytes_done, int64_t documents, int64_t tokens);
  /// Prints the final state (always) and ends the line.
  void finish(int64_t bytes_done, int64_t documents, int64_t tokens);
  /// Seconds since construction.
  double elapsed_s() const;

 private:
  std::string line(int64_t bytes_done, int64_t documents, int64_t tokens) const;

  int64_t total_bytes_;
  double interval_s_;
  bool tty_;
  std::chrono::steady_clock::time_point start_;
  std::chrono::steady_clock::time_point last_print_;
};

/// "12.3 MB", "512 B": a byte count for people.
std::string human_bytes(double bytes);
/// "1h02m", "3m05s", "12s": a duration for people.
std::string human_duration(double seconds);

}  // namespace orthotron
