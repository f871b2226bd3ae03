// symmetric_product.cpp: upper-block-triangle products and the triangle mirror.
#include "optim/symmetric_product.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <string>

#include "base/errors.h"

namespace orthotron {

namespace {

constexpr int64_t kTile = 32;  // 32 x 32 elements: 2 to 8 KiB, both the read and the written tile stay in L1

/// m[i][j] = m[j][i] for i > j within row tiles [tile_begin, tile_end); elements copied as raw bits.
template <typename Bits>
void mirror_tiles(Bits* p, int64_t s, int64_t tile_begin, int64_t tile_end) {
  for (int64_t ti = tile_begin; ti < tile_end; ++ti) {
    const int64_t i0 = ti * kTile, i1 = std::min(s, i0 + kTile);
    for (int64_t j0 = 0; j0 <= i0; j0 += kTile) {
      const int64_t j1 = std::min(s, j0 + kTile);
      for (int64_t i = i0; i < i1; ++i) {
        const int64_t j_end = std::min(j1, i);
        Bits* row = p + i * s;
        for (int64_t j = j0; j < j_end; ++j) row[j] = p[j * s + i];
      }
    }
  }
}

template <typename Bits>
void mirror(Bits* p, int64_t s) {
  if (s < 2) return;  // no strict lower triangle
  const int64_t tiles = (s + kTile - 1) / kTile;
  // Below about 64K elements the threads' start-up costs more than the copy.
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 16) / (kTile * s));
  at::parallel_for(0, tiles, grain, [&](int64_t begin, int64_t end) { mirror_tiles(p, s, begin, end); });
}

void check_square(const at::Tensor& m, const char* what) {
  if (m.dim() != 2 || m.size(0) != m.size(1) || !m.is_contiguous() || !m.device().is_cpu()) {
    throw ShapeError(std::string(what) + " needs a contiguous square CPU matrix, got shape " + c10::str(m.sizes()) +
                     (m.is_contiguous() ? "" : " (not contiguous)") + " on " + m.device().str());
  }
}

}  // namespace

int64_t symmetric_product_blocks(int64_t s, at::ScalarType dtype) {
  return s >= (c10::elementSize(dtype) <= 2 ? 512 : 256) ? 4 : 1;
}

void mirror_upper_to_lower(at::Tensor& m) {
  check_square(m, "mirror_upper_to_lower");
  const int64_t s = m.size(0);
  switch (m.element_size()) {
    case 2:
      mirror(static_cast<uint16_t*>(m.data_ptr()), s);
      break;
    case 4:
      mirror(static_cast<uint32_t*>(m.data_ptr()), s);
      break;
    case 8:
      mirror(static_cast<uint64_t*>(m.data_ptr()), s);
      break;
    default:
      throw InvalidArgument("mirror_upper_to_lower: elements of " + std::to_string(m.element_size()) + " bytes (" +
                            std::string(c10::toString(m.scalar_type())) + ") are not supported; 2, 4 or 8 are");
  }
}

void symmetric_addmm_out(at::Tensor& out, const at::Tensor& self, const at::Tensor& x, const at::Tensor& y, double beta,
                         double alpha, int64_t blocks) {
  check_square(out, "symmetric_addmm_out");
  const int64_t s = out.size(0);
  if (x.dim() != 2 || y.dim() != 2 || x.size(0) != s || y.size(1) != s || x.size(1) != y.size(0) ||
      !self.sizes().equals(out.sizes())) {
    throw ShapeError("symmetric_addmm_out: x " + c10::str(x.sizes()) + " @ y " + c10::str(y.sizes()) + " + self " +
                     c10::str(self.sizes()) + " does not make the square out " + c10::str(out.sizes()));
  }
  if (blocks < 1) throw InvalidArgument("symmetric_addmm_out: blocks must be >= 1, got " + std::to_string(blocks));
  const int64_t rows = (s + blocks - 1) / blocks;
  for (int64_t r0 = 0; r0 < s; r0 += rows) {
    const int64_t h = std::min(rows, s - r0);
    // Rows [r0, r0 + h), columns [r0, s): the diagonal block and everything right of it, written
    // in place through out's row stride.
    at::Tensor part = out.narrow(0, r0, h).narrow(1, r0, s - r0);
    const at::Tensor xs = x.narrow(0, r0, h), ys = y.narrow(1, r0, s - r0);
    if (beta == 0.0 && alpha == 1.0) {
      at::mm_out(part, xs, ys);
    } else {  // beta == 0: addmm ignores self
      at::addmm_out(part, self.narrow(0, r0, h).narrow(1, r0, s - r0), xs, ys, beta, alpha);
    }
  }
  mirror_upper_to_lower(out);
}

void symmetric_mm_out(at::Tensor& out, const at::Tensor& x, const at::Tensor& y, int64_t blocks) {
  symmetric_addmm_out(out, out, x, y, /*beta=*/0.0, /*alpha=*/1.0, blocks);
}

at::Tensor symmetric_addmm_reference(const at::Tensor& self, const at::Tensor& x, const at::Tensor& y, double beta,
                                     double alpha) {
  const at::Tensor full = at::addmm(self, x, y, beta, alpha);
  const at::Tensor lower = at::ones_like(full, at::kBool).tril(-1);
  return at::where(lower, full.t(), full);  // where copies bits (a sum would turn -0 into +0)
}

}  // namespace orthotron
