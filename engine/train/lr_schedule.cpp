// lr_schedule.cpp: warmup + constant / cosine / warmup-stable-decay factors.
#include "engine/train/lr_schedule.h"

#include <algorithm>
#include <cmath>

#include "base/errors.h"

namespace orthotron {

double lr_factor(const LrScheduleOptions& s, int64_t iteration, int64_t total) {
  if (iteration < 1 || iteration > total) {
    throw InvalidArgument("lr_factor: iteration " + std::to_string(iteration) + " is outside [1, " +
                          std::to_string(total) + "]");
  }
  if (iteration <= s.warmup) return static_cast<double>(iteration) / static_cast<double>(s.warmup);
  const double span = static_cast<double>(total - s.warmup);  // > 0 here
  const double done = static_cast<double>(iteration - s.warmup);
  switch (s.kind) {
    case LrScheduleKind::kConstant:
      return 1.0;
    case LrScheduleKind::kCosine: {
      const double p = done / span;
      return s.min_ratio + (1.0 - s.min_ratio) * 0.5 * (1.0 + std::cos(M_PI * p));
    }
    case LrScheduleKind::kWsd: {
      const double decay = std::max(1.0, std::ceil(s.decay_fraction * span));
      const double stable = span - decay;
      if (done <= stable) return 1.0;
      return 1.0 - (1.0 - s.min_ratio) * (done - stable) / decay;
    }
  }
  return 1.0;
}

}  // namespace orthotron
