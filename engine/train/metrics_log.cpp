// metrics_log.cpp: log lines, metrics.jsonl and the progress line.
#include "engine/train/metrics_log.h"

#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <ctime>

#include "base/atomic_file.h"
#include "base/errors.h"

namespace orthotron {

std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "--:--:--";
  auto s = static_cast<int64_t>(seconds + 0.5);
  const int64_t days = s / 86400;
  s %= 86400;
  char buf[64];
  if (days > 0) {
    std::snprintf(buf, sizeof buf, "%lldd %02lld:%02lld:%02lld", static_cast<long long>(days),
                  static_cast<long long>(s / 3600), static_cast<long long>(s / 60 % 60),
                  static_cast<long long>(s % 60));
  } else {
    std::snprintf(buf, sizeof buf, "%02lld:%02lld:%02lld", static_cast<long long>(s / 3600),
                  static_cast<long long>(s / 60 % 60), static_cast<long long>(s % 60));
  }
  return buf;
}

std::string format_iteration_line(const IterationRecord& r, const std::string& timestamp) {
  std::string lrs;
  for (const auto& [group, value] : r.lr) {
    char b[64];
    std::snprintf(b, sizeof b, "%s%s %.6E", lrs.empty() ? "" : ", ", group.c_str(), value);
    lrs += b;
  }
  char buf[768];
  std::snprintf(buf, sizeof buf,
                " [%s] iteration %8lld/%8lld | consumed samples: %12lld | elapsed time per iteration (ms): %.1f | "
                "optimizer (ms): %.1f | tokens per second: %.1f | learning rate: %s | global batch size: %5lld | "
                "lm loss: %.6E | grad norm: %.3f | number of skipped iterations: %3lld | number of nan iterations: "
                "%3lld | ETA %s |",
                timestamp.c_str(), static_cast<long long>(r.iteration), static_cast<long long>(r.train_iters),
                static_cast<long long>(r.consumed_samples), r.ms_per_iteration, r.optimizer_ms, r.tokens_per_second,
                lrs.c_str(), static_cast<long long>(r.global_batch), r.loss, r.grad_norm,
                static_cast<long long>(r.skipped), static_cast<long long>(r.nan),
                format_duration(r.eta_seconds).c_str());
  return buf;
}

MetricsLog::MetricsLog(const std::string& output_dir, bool progress)
    : dir_(output_dir), progress_(progress && ::isatty(STDOUT_FILENO)) {
  try {
    make_directories(dir_);
  } catch (const FormatError& e) {
    throw FormatError("logging.output_dir '" + dir_ + "': " + e.what());
  }
  // A new run replaces the previous run's files in the same directory.
  log_ = std::fopen((dir_ + "/log.txt").c_str(), "w");
  jsonl_ = std::fopen((dir_ + "/metrics.jsonl").c_str(), "w");
  if (!log_ || !jsonl_) {
    const std::string why = std::strerror(errno);
    if (log_) std::fclose(log_);
    if (jsonl_) std::fclose(jsonl_);
    throw FormatError("logging.output_dir '" + dir_ + "': cannot open log.txt / metrics.jsonl: " + why);
  }
}

MetricsLog::~MetricsLog() {
  if (progress_shown_) std::fputs("\n", stdout);
  std::fclose(log_);
  std::fclose(jsonl_);
}

void MetricsLog::line(const std::string& text) {
  if (progress_shown_) {
    std::fputs("\r\033[K", stdout);
    progress_shown_ = false;
  }
  std::fprintf(stdout, "%s\n", text.c_str());
  std::fflush(stdout);
  std::fprintf(log_, "%s\n", text.c_str());
  std::fflush(log_);
}

void MetricsLog::record(const nlohmann::json& object) {
  const std::string text = object.dump();
  std::fprintf(jsonl_, "%s\n", text.c_str());
  std::fflush(jsonl_);
}

void MetricsLog::iteration(const IterationRecord& r) {
  const std::time_t now = std::time(nullptr);
  char stamp[32];
  std::strftime(stamp, sizeof stamp, "%Y-%m-%d %H:%M:%S", std::localtime(&now));
  line(format_iteration_line(r, stamp));
  record({{"kind", "train"},
          {"iteration", r.iteration},
          {"consumed_samples", r.consumed_samples},
          {"tokens", r.tokens},
          {"ms_per_iteration", r.ms_per_iteration},
          {"optimizer_ms", r.optimizer_ms},
          {"tokens_per_second", r.tokens_per_second},
          {"lr", r.lr},
          {"loss", std::isfinite(r.loss) ? nlohmann::json(r.loss) : nlohmann::json(nullptr)},
          {"grad_norm", std::isfinite(r.grad_norm) ? nlohmann::json(r.grad_norm) : nlohmann::json(nullptr)},
          {"skipped", r.skipped},
          {"nan", r.nan}});
}

void MetricsLog::progress(int64_t iteration, int64_t total, double eta_seconds) {
  if (!progress_) return;
  constexpr int kWidth = 30;
  const int filled = total > 0 ? static_cast<int>(kWidth * iteration / total) : kWidth;
  std::string bar(static_cast<size_t>(filled), '#');
  bar.resize(kWidth, '.');
  std::fprintf(stdout, "\r\033[K[%s] %lld/%lld ETA %s", bar.c_str(), static_cast<long long>(iteration),
               static_cast<long long>(total), format_duration(eta_seconds).c_str());
  std::fflush(stdout);
  progress_shown_ = true;
}

void MetricsLog::write_file(const std::string& name, const std::string& text) const {
  write_file_atomically(dir_ + "/" + name, text);
}

}  // namespace orthotron
