// rotary.cpp: rotate-half rotary position embeddings.
#include "engine/model/rotary.h"

#include <string>

#include "base/errors.h"

namespace orthotron {

RotaryTables make_rotary_tables(int64_t max_positions, int64_t head_dim, double base, at::Device device) {
  if (head_dim < 2 || head_dim % 2 != 0 || max_positions < 1 || !(base > 0.0)) {
    throw InvalidArgument("rotary tables: head_dim (" + std::to_string(head_dim) + ") must be even and >= 2, " +
                          "max_positions (" + std::to_string(max_positions) + ") >= 1, base (" + std::to_string(base) +
                          ") > 0");
  }
  const auto f64 = at::TensorOptions().dtype(at::kDouble);
  const at::Tensor inv_freq = at::pow(base, -at::arange(0, head_dim, 2, f64) / static_cast<double>(head_dim));
  const at::Tensor angles = at::outer(at::arange(max_positions, f64), inv_freq);  // [P, d/2]
  const at::Tensor emb = at::cat({angles, angles}, -1);                           // [P, d]
  return {emb.cos().to(device, at::kFloat), emb.sin().to(device, at::kFloat)};
}

at::Tensor apply_rotary(const at::Tensor& x, const RotaryTables& tables) {
  if (x.dim() != 4 || x.size(2) > tables.cos.size(0) || x.size(3) != tables.cos.size(1)) {
    throw ShapeError("apply_rotary: x must be [B, heads, S, head_dim] with S <= " + std::to_string(tables.cos.size(0)) +
                     " and head_dim = " + std::to_string(tables.cos.size(1)) + ", got " + c10::str(x.sizes()));
  }
  const int64_t s = x.size(2), half = x.size(3) / 2;
  const at::Tensor cos = tables.cos.narrow(0, 0, s).to(x.scalar_type());
  const at::Tensor sin = tables.sin.narrow(0, 0, s).to(x.scalar_type());
  const at::Tensor rotated = at::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
  return x * cos + rotated * sin;
}

}  // namespace orthotron
