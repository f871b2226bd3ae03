// metrics_log.h: what a run reports, from rank 0: Megatron-style log lines (stdout and
// <output_dir>/log.txt), one JSON object per line in <output_dir>/metrics.jsonl (flushed per line,
// so a crash leaves every finished record readable), and a progress line with ETA on a terminal.
#pragma once

#include <cstdint>
#include <cstdio>
#include <map>
#include <nlohmann/json.hpp>
#include <string>

namespace orthotron {

/// One training iteration as logged.
struct IterationRecord {
  int64_t iteration = 0;
  int64_t train_iters = 0;
  int64_t consumed_samples = 0;
  int64_t tokens = 0;  ///< consumed_samples x seq_length
  int64_t global_batch = 0;
  double ms_per_iteration = 0;  ///< mean over the iterations since the last log line
  double optimizer_ms = 0;      ///< of which the optimizer step (communication included)
  double tokens_per_second = 0;
  std::map<std::string, double> lr;  ///< per optimizer group
  double loss = 0;
  double grad_norm = 0;
  int64_t skipped = 0;  ///< iterations whose update was skipped, in all
  int64_t nan = 0;      ///< of which for a NaN/Inf loss or gradient norm
  double eta_seconds = 0;
};

/// "hh:mm:ss" (days as "Nd hh:mm:ss").
std::string format_duration(double seconds);

/// The Megatron-style line for `r` (timestamp, iteration, consumed samples, ms per iteration,
/// tokens/s, learning rate, global batch, lm loss, grad norm, skipped and NaN iterations, ETA).
std::string format_iteration_line(const IterationRecord& r, const std::string& timestamp);

/// Writes the run's outputs. Only the rank that owns one (rank 0) creates it; the others never
/// touch the files. Not thread-safe.
class MetricsLog {
 public:
  /// Creates `output_dir` (and parents) and opens log.txt and metrics.jsonl, replacing a previous
  /// run's.
  /// FormatError naming the path when they cannot be created.
  MetricsLog(const std::string& output_dir, bool progress);
  ~MetricsLog();
  MetricsLog(const MetricsLog&) = delete;
  MetricsLog& operator=(const MetricsLog&) = delete;

  /// A line to stdout and log.txt (clearing a progress line first).
  void line(const std::string& text);
  /// One JSON object to metrics.jsonl, flushed.
  void record(const nlohmann::json& object);
  void iteration(const IterationRecord& r);
  /// Rewrites the progress line in place (only when stdout is a terminal and progress is on).
  void progress(int64_t iteration, int64_t total, double eta_seconds);
  /// Writes `text` to <output_dir>/<name> atomically.
  void write_file(const std::string& name, const std::string& text) const;
  const std::string& output_dir() const { return dir_; }

 private:
  std::string dir_;
  std::FILE* log_ = nullptr;
  std::FILE* jsonl_ = nullptr;
  bool progress_ = false;
  bool progress_shown_ = false;
};

}  // namespace orthotron
