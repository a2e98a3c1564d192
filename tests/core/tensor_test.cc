// Tensor (core/tensor.h): shapes, zero fill, alignment, reuse of the allocation, deep copies.
#include "core/tensor.h"

#include <cstdint>
#include <utility>

#include <gtest/gtest.h>

namespace openmoe {
namespace {

TEST(Tensor, ShapeSizeAndZeroFill) {
  Tensor t({2, 3, 5});
  EXPECT_EQ(t.rank(), 3);
  EXPECT_EQ(t.size(), 30);
  EXPECT_EQ(t.dim(0), 2);
  EXPECT_EQ(t.dim(-1), 5);
  EXPECT_EQ(t.dim(-3), 2);
  EXPECT_EQ(t.ShapeString(), "(2, 3, 5)");
  for (int64_t i = 0; i < t.size(); ++i) EXPECT_EQ(t[i], 0.0f);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(t.data()) % 64, 0u);
  Tensor empty;
  EXPECT_EQ(empty.size(), 0);
  EXPECT_EQ(empty.rank(), 0);
}

TEST(Tensor, NumElements) {
  EXPECT_EQ(NumElements({}), 1);  // a scalar
  EXPECT_EQ(NumElements({0, 7}), 0);
  EXPECT_EQ(NumElements({4, 1, 3}), 12);
}

TEST(Tensor, ResizeReusesTheAllocationWhenItFitsAndZeroes) {
  Tensor t({4, 4});
  for (int64_t i = 0; i < t.size(); ++i) t[i] = static_cast<float>(i + 1);
  const float* before = t.data();
  t.Resize({3, 5});  // 15 <= 16: same buffer, cleared
  EXPECT_EQ(t.data(), before);
  EXPECT_EQ(t.ShapeString(), "(3, 5)");
  for (int64_t i = 0; i < t.size(); ++i) EXPECT_EQ(t[i], 0.0f) << i;
  t[0] = 9.0f;
  t.ResizeUninitialized({2, 2});
  EXPECT_EQ(t.data(), before);
  EXPECT_EQ(t.size(), 4);
  t.Resize({100});  // grows: a new aligned buffer, zeroed
  EXPECT_EQ(t.size(), 100);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(t.data()) % 64, 0u);
  for (int64_t i = 0; i < t.size(); ++i) EXPECT_EQ(t[i], 0.0f) << i;
  t[5] = 2.0f;
  t.Zero();
  EXPECT_EQ(t[5], 0.0f);
}

TEST(Tensor, CopiesAreDeepAndMovesTransferTheBuffer) {
  Tensor a({2, 3});
  for (int64_t i = 0; i < a.size(); ++i) a[i] = static_cast<float>(i) * 0.5f;
  Tensor b = a;
  EXPECT_NE(b.data(), a.data());
  EXPECT_EQ(b.shape(), a.shape());
  for (int64_t i = 0; i < a.size(); ++i) EXPECT_EQ(b[i], a[i]);
  b[0] = 42.0f;
  EXPECT_EQ(a[0], 0.0f);
  Tensor c({1});
  c = a;  // copy-assign over a smaller tensor
  EXPECT_EQ(c.ShapeString(), "(2, 3)");
  EXPECT_EQ(c[5], 2.5f);
  c = c;  // self-assignment keeps the contents
  EXPECT_EQ(c[5], 2.5f);
  const float* buffer = a.data();
  Tensor d = std::move(a);
  EXPECT_EQ(d.data(), buffer);
  EXPECT_EQ(d[4], 2.0f);
}

}  // namespace
}  // namespace openmoe
