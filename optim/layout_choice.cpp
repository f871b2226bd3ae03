// layout_choice.cpp: per-step elements of layouts A and B, and the choice between them.
#include "optim/layout_choice.h"

#include <algorithm>
#include <cstdio>

#include "base/errors.h"

namespace orthotron {

LayoutCost compare_layouts(const OwnerPlan& a, const OwnerPlan& b) {
  if (a.layout != ShardLayout::kOwnerAligned || b.layout != ShardLayout::kElementWise) {
    throw InvalidArgument("compare_layouts: expects a layout-A plan and a layout-B plan");
  }
  if (a.world != b.world || a.total_elements != b.total_elements || a.params.size() != b.params.size()) {
    throw InvalidArgument("compare_layouts: the plans are of other parameters or world sizes (W " +
                          std::to_string(a.world) + " and " + std::to_string(b.world) + ", P " +
                          std::to_string(a.total_elements) + " and " + std::to_string(b.total_elements) + ")");
  }
  const int64_t w = a.world;
  const int64_t s0 = std::max<int64_t>(1, (a.total_elements + w - 1) / w);
  LayoutCost c;
  c.zero1 = 4 * (w - 1) * s0;
  c.owner_aligned = 4 * (w - 1) * a.shard_len;
  int64_t exchange = 0;
  for (size_t r = 0; r < static_cast<size_t>(w); ++r) {
    exchange = std::max(exchange, 2 * (b.gather_sent[r] + b.gather_received[r]));
  }
  c.element_wise = 4 * (w - 1) * b.shard_len + exchange;
  c.choice = c.element_wise < c.owner_aligned ? ShardLayout::kElementWise : ShardLayout::kOwnerAligned;
  char buf[400];
  std::snprintf(buf, sizeof buf,
                "layout A pads %.2f%% of P (shard %lld elements against ceil(P/W) = %lld) and moves %.3fx ZeRO-1's "
                "elements per step; layout B moves %.3fx (its Muon all-to-alls %lld elements on the busiest rank): %s",
                100.0 * a.padding_ratio(), static_cast<long long>(a.shard_len), static_cast<long long>(s0),
                c.ratio(c.owner_aligned), c.ratio(c.element_wise), static_cast<long long>(exchange),
                to_string(c.choice).c_str());
  c.reason = buf;
  return c;
}

OwnerPlan make_plan(const std::vector<PlanParam>& params, int world, const std::string& setting, std::string* why,
                    int64_t bucket_elements) {
  if (setting == "owner_aligned" || setting == "element_wise") {
    if (why != nullptr) *why = "set to " + setting;
    return setting == "owner_aligned" ? make_owner_plan(params, world)
                                      : make_element_plan(params, world, bucket_elements);
  }
  if (setting != "auto") {
    throw ConfigError("shard layout '" + setting + "': expected owner_aligned, element_wise or auto");
  }
  OwnerPlan a = make_owner_plan(params, world), b = make_element_plan(params, world, bucket_elements);
  const LayoutCost c = compare_layouts(a, b);
  if (why != nullptr) *why = "auto: " + c.reason;
  return c.choice == ShardLayout::kOwnerAligned ? std::move(a) : std::move(b);
}

}  // namespace orthotron
