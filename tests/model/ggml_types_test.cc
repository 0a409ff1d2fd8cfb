#include "chorus/gguf/ggml_types.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "chorus/backends/cpu_backend.h"

namespace chorus {
namespace {

TEST(GgmlTypesTest, HalfConversionMatchesExactValues) {
  EXPECT_EQ(FloatToHalf(1.0f), 0x3c00);
  EXPECT_EQ(FloatToHalf(-2.0f), 0xc000);
  EXPECT_EQ(FloatToHalf(65504.0f), 0x7bff);
  EXPECT_EQ(FloatToHalf(1e6f), 0x7c00);
  EXPECT_EQ(FloatToHalf(5.9604645e-8f), 0x0001);  // smallest subnormal
  EXPECT_EQ(HalfToFloat(0x0001), 5.9604645e-8f);
  EXPECT_EQ(HalfToFloat(0x3555), 0.33325195f);
  // Every finite half survives a round trip.
  for (uint32_t h = 0; h < 0x10000; ++h) {
    if ((h & 0x7c00) == 0x7c00) continue;
    EXPECT_EQ(FloatToHalf(HalfToFloat(static_cast<uint16_t>(h))), h) << h;
  }
}

TEST(GgmlTypesTest, Bf16RoundsToNearestEven) {
  EXPECT_EQ(FloatToBf16(1.0f), 0x3f80);
  EXPECT_EQ(Bf16ToFloat(FloatToBf16(3.140625f)), 3.140625f);
  EXPECT_EQ(FloatToBf16(1.00390625f), 0x3f80);  // halfway, rounds to even
}

TEST(GgmlTypesTest, QuantizationErrorIsBoundedByTheStep) {
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> dist(-3, 3);
  std::vector<float> x(256), y(256);
  for (auto& v : x) v = dist(rng);
  for (GgmlType t : {GgmlType::kQ8_0, GgmlType::kQ4_0}) {
    std::vector<uint8_t> q(256 * 2);
    QuantizeRow(t, x.data(), q.data(), 256);
    DequantizeRow(t, q.data(), y.data(), 256);
    for (int b = 0; b < 8; ++b) {
      float amax = 0;
      for (int i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(x[b * 32 + i]));
      // Q4_0 maps the largest magnitude to -8, so the other sign clips at +7 steps: a full step.
      const float bound = t == GgmlType::kQ8_0 ? amax / 127 * 0.5f : amax / 8;
      for (int i = 0; i < 32; ++i) {
        EXPECT_LE(std::fabs(x[b * 32 + i] - y[b * 32 + i]), bound + 1e-3f * amax)
            << TypeName(t) << " " << b * 32 + i;
      }
    }
  }
}

TEST(GgmlTypesTest, SimdDequantizationMatchesScalar) {
  std::mt19937 rng(11);
  std::uniform_real_distribution<float> dist(-1, 1);
  std::vector<float> x(512), a(512), b(512);
  for (auto& v : x) v = dist(rng);
  for (GgmlType t : {GgmlType::kF16, GgmlType::kBF16, GgmlType::kQ8_0, GgmlType::kQ4_0,
                     GgmlType::kQ4_K, GgmlType::kQ5_K, GgmlType::kQ6_K}) {
    std::vector<uint8_t> q(512 * 4);
    QuantizeRow(t, x.data(), q.data(), 512);
    std::fill(a.begin(), a.end(), NAN);
    std::fill(b.begin(), b.end(), NAN);
    DequantizeRow(t, q.data(), a.data(), 512);
    cpu::DequantizeRowFast(t, q.data(), b.data(), 512);
    // K-quants: the SIMD path may fuse scale * q - min into one rounding.
    const bool fused = t == GgmlType::kQ4_K || t == GgmlType::kQ5_K;
    for (int i = 0; i < 512; ++i) {
      if (fused) {
        ASSERT_NEAR(a[i], b[i], 1e-6f * std::max(1.0f, std::fabs(a[i]))) << TypeName(t) << " " << i;
      } else {
        ASSERT_EQ(a[i], b[i]) << TypeName(t) << " " << i;
      }
    }
  }
}

}  // namespace
}  // namespace chorus
