// test_symmetric_product.cpp: tests of the symmetric products behind ns_symmetric
// (optim/symmetric_product.h): the triangle mirror equals its reference bit for bit in every
// element size and at 1 and 2 threads; the block-triangle products equal the full product's
// upper triangle within float rounding, are exactly symmetric, and refuse bad shapes; the block
// policy depends on the shape and dtype alone.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

#include "base/errors.h"
#include "optim/symmetric_product.h"
#include "test_util.h"

namespace orthotron {
namespace {

using orthotron::testing::max_abs_diff;

/// The integer type of the same width, so bits (NaN payloads, -0) compare exactly.
at::Tensor bits_of(const at::Tensor& t) {
  switch (t.element_size()) {
    case 2:
      return t.view(at::kShort);
    case 4:
      return t.view(at::kInt);
    default:
      return t.view(at::kLong);
  }
}

TEST(SymmetricProduct, MirrorCopiesTheUpperTriangleBitForBit) {
  at::manual_seed(11);
  const int saved = at::get_num_threads();
  for (int threads : {1, 2}) {
    at::set_num_threads(threads);
    for (const auto dtype : {at::kFloat, at::kDouble, at::kBFloat16, at::kHalf}) {
      // Sizes around the 32-element tile, and one large enough to run on both threads.
      for (int64_t s : {0, 1, 2, 31, 32, 33, 65, 100, 600}) {
        at::Tensor m = at::randn({s, s}).to(dtype);
        if (s > 2) m[0][1] = -0.0;  // the sign of zero must travel too
        const at::Tensor want =
            at::where(at::ones_like(m, at::kBool).tril(-1), m.t(), m);  // lower <- upper, bits copied
        mirror_upper_to_lower(m);
        EXPECT_TRUE(at::equal(bits_of(m), bits_of(want))) << c10::toString(dtype) << " " << s << " at " << threads;
      }
    }
  }
  at::set_num_threads(saved);
}

TEST(SymmetricProduct, BlockTriangleEqualsTheFullProductsUpperTriangle) {
  at::manual_seed(12);
  for (int64_t s : {1, 7, 64, 97}) {
    for (int64_t k : {1, 33, 160}) {
      const at::Tensor x = at::randn({s, k}, at::kDouble);
      const at::Tensor sym = at::matmul(x, x.t());  // a symmetric self
      for (int64_t blocks : {1, 2, 3, 4, 5, 8}) {
        at::Tensor out = at::full({s, s}, 7.0, at::kDouble);
        symmetric_mm_out(out, x, x.t(), blocks);
        EXPECT_LT(max_abs_diff(out, symmetric_addmm_reference(out, x, x.t(), 0.0, 1.0)), 1e-12 * k)
            << s << "x" << k << " blocks " << blocks;
        EXPECT_TRUE(at::equal(out, out.t())) << s << "x" << k << " blocks " << blocks;
        // beta self + alpha A A with a symmetric A, as Newton-Schulz forms b A + c A^2.
        at::Tensor out2 = at::empty({s, s}, at::kDouble);
        symmetric_addmm_out(out2, sym, sym, sym, -4.775, 2.0315, blocks);
        const at::Tensor want = symmetric_addmm_reference(sym, sym, sym, -4.775, 2.0315);
        EXPECT_LE(max_abs_diff(out2, want), 1e-12 * (1.0 + want.abs().max().item<double>()))
            << s << "x" << k << " blocks " << blocks;
        EXPECT_TRUE(at::equal(out2, out2.t()));
      }
    }
  }
  // float32 and bfloat16 through the same path: within rounding of the full product.
  const at::Tensor x = at::randn({300, 200});
  for (const auto dtype : {at::kFloat, at::kBFloat16}) {
    const at::Tensor xd = x.to(dtype);
    at::Tensor out = at::empty({300, 300}, xd.options());
    symmetric_mm_out(out, xd, xd.t(), 4);
    const at::Tensor want = at::matmul(x.to(at::kDouble), x.to(at::kDouble).t());
    const double tol = dtype == at::kFloat ? 1e-5 : 1e-2;
    EXPECT_LT(max_abs_diff(out, want), tol * want.abs().max().item<double>()) << c10::toString(dtype);
    EXPECT_TRUE(at::equal(out, out.t())) << c10::toString(dtype);
  }
}

TEST(SymmetricProduct, BadShapesAreShapeErrors) {
  const at::Tensor x = at::randn({8, 5});
  at::Tensor rect = at::empty({8, 7});
  EXPECT_THROW(symmetric_mm_out(rect, x, x.t(), 2), ShapeError);
  at::Tensor out = at::empty({8, 8});
  EXPECT_THROW(symmetric_mm_out(out, x, x, 2), ShapeError);  // [8, 5] @ [8, 5]
  EXPECT_THROW(symmetric_mm_out(out, x, x.t(), 0), InvalidArgument);
  at::Tensor strided = at::empty({8, 16}).narrow(1, 0, 8);
  EXPECT_THROW(mirror_upper_to_lower(strided), ShapeError);
  at::Tensor bytes = at::empty({4, 4}, at::kByte);
  EXPECT_THROW(mirror_upper_to_lower(bytes), InvalidArgument);
}

TEST(SymmetricProduct, BlocksDependOnShapeAndDtypeOnly) {
  EXPECT_EQ(symmetric_product_blocks(255, at::kFloat), 1);
  EXPECT_EQ(symmetric_product_blocks(256, at::kFloat), 4);
  EXPECT_EQ(symmetric_product_blocks(256, at::kDouble), 4);
  EXPECT_EQ(symmetric_product_blocks(511, at::kBFloat16), 1);
  EXPECT_EQ(symmetric_product_blocks(512, at::kBFloat16), 4);
  EXPECT_EQ(symmetric_product_blocks(4096, at::kHalf), 4);
}

}  // namespace
}  // namespace orthotron
