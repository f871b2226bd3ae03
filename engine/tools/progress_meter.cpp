// progress_meter.cpp: the progress line of orthotron_preprocess.
#include "progress_meter.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>

namespace orthotron {

std::string human_bytes(double bytes) {
  const char* units[] = {"B", "kB", "MB", "GB", "TB"};
  int u = 0;
  while (bytes >= 1000.0 && u < 4) {
    bytes /= 1000.0;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof(buf), u == 0 ? "%.0f %s" : "%.1f %s", bytes, units[u]);
  return buf;
}

std::string human_duration(double seconds) {
  const long s = std::max(0L, static_cast<long>(seconds + 0.5));
  char buf[32];
  if (s >= 3600) {
    std::snprintf(buf, sizeof(buf), "%ldh%02ldm", s / 3600, (s / 60) % 60);
  } else if (s >= 60) {
    std::snprintf(buf, sizeof(buf), "%ldm%02lds", s / 60, s % 60);
  } else {
    std::snprintf(buf, sizeof(buf), "%lds", s);
  }
  return buf;
}

ProgressMeter::ProgressMeter(int64_t total_bytes, double interval_s, double log_interval_s)
    : total_bytes_(total_bytes), tty_(::isatty(STDERR_FILENO) == 1) {
  interval_s_ = tty_ ? interval_s : log_interval_s;
  start_ = std::chrono::steady_clock::now();
  last_print_ = start_;
}

double ProgressMeter::elapsed_s() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
}

std::string ProgressMeter::line(int64_t bytes_done, int64_t documents, int64_t tokens) const {
  const double t = std::max(elapsed_s(), 1e-9);
  const double frac = total_bytes_ > 0 ? std::min(1.0, static_cast<double>(bytes_done) / total_bytes_) : 1.0;
  constexpr int kWidth = 24;
  const int filled = static_cast<int>(frac * kWidth);
  std::string bar = "[" + std::string(filled, '#') + std::string(kWidth - filled, '.') + "]";
  const double eta = frac > 0 ? t * (1.0 - frac) / frac : 0.0;
  char buf[256];
  std::snprintf(buf, sizeof(buf), "%s %5.1f%% %s / %s, %lld docs, %lld tokens, %.0f tokens/s, ETA %s", bar.c_str(),
                100.0 * frac, human_bytes(static_cast<double>(bytes_done)).c_str(),
                human_bytes(static_cast<double>(total_bytes_)).c_str(), static_cast<long long>(documents),
                static_cast<long long>(tokens), tokens / t, human_duration(eta).c_str());
  return buf;
}

void ProgressMeter::update(int64_t bytes_done, int64_t documents, int64_t tokens) {
  const auto now = std::chrono::steady_clock::now();
  if (std::chrono::duration<double>(now - last_print_).count() < interval_s_) return;
  last_print_ = now;
  const std::string text = line(bytes_done, documents, tokens);
  if (tty_) {
    std::fprintf(stderr, "\r%s\033[K", text.c_str());
  } else {
    std::fprintf(stderr, "%s\n", text.c_str());
  }
  std::fflush(stderr);
}

void ProgressMeter::finish(int64_t bytes_done, int64_t documents, int64_t tokens) {
  const std::string text = line(bytes_done, documents, tokens);
  std::fprintf(stderr, tty_ ? "\r%s\033[K\n" : "%s\n", text.c_str());
  std::fflush(stderr);
}

}  // namespace orthotron
