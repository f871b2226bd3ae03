// lr_schedule.h: the learning-rate schedules that drive every optimizer group: linear warmup, then
// constant, cosine, or warmup-stable-decay (WSD: flat, then a linear decay over the last fraction,
// as Moonlight and the modded-nanogpt speedrun run Muon). A schedule is a factor applied to each
// group's configured lr, so Muon and AdamW groups keep their own base rates.
#pragma once

#include <cstdint>

#include "engine/config/engine_config.h"

namespace orthotron {

/// The factor for iteration `iteration` (1-based, the lr its optimizer step uses) of `total`:
/// warmup: iteration / warmup for iteration <= warmup; then
///   constant: 1;
///   cosine:   min_ratio + (1 - min_ratio) * (1 + cos(pi * p)) / 2, p = (iteration - warmup) / (total - warmup);
///   wsd:      1 until the last ceil(decay_fraction * (total - warmup)) iterations, then linear to min_ratio
///             at iteration == total.
/// Pure; InvalidArgument when iteration is outside [1, total].
double lr_factor(const LrScheduleOptions& schedule, int64_t iteration, int64_t total);

}  // namespace orthotron
