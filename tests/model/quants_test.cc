// Reference dequantization and quantization of Q4_1, Q5_0, Q5_1 and the K-quants
// (src/gguf/dequantize.cc): hand-built blocks decoded against the GGUF layouts written out here,
// round trips on Gaussian rows, and real files quantized by llama.cpp.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "../test_util.h"
#include "chorus/gguf/ggml_types.h"
#include "chorus/gguf/gguf.h"

namespace chorus {
namespace {

// f16 bit patterns of exactly representable values (not computed by the code under test).
constexpr uint16_t kHalfQuarter = 0x3400;   // 0.25
constexpr uint16_t kHalfHalf = 0x3800;      // 0.5
constexpr uint16_t kHalfMinusOne = 0xbc00;  // -1.0
constexpr uint16_t kHalfTwo = 0x4000;       // 2.0

void PutHalf(std::vector<uint8_t>& b, size_t at, uint16_t h) {
  b[at] = static_cast<uint8_t>(h & 0xff);
  b[at + 1] = static_cast<uint8_t>(h >> 8);
}

std::vector<float> Decode(GgmlType type, const std::vector<uint8_t>& bytes, int n) {
  std::vector<float> out(n, NAN);
  DequantizeRow(type, bytes.data(), out.data(), n);
  return out;
}

// ---- hand-built blocks ------------------------------------------------------------------------

TEST(QuantsTest, Q4_1BlockDecodes) {
  std::vector<uint8_t> b(20, 0);  // d @0, m @2, qs @4
  PutHalf(b, 0, kHalfHalf);
  PutHalf(b, 2, kHalfMinusOne);
  for (int i = 0; i < 16; ++i) b[4 + i] = static_cast<uint8_t>(i * 17 + 3);
  b[4 + 3] = 0xA5;
  b[4 + 15] = 0xF0;
  const auto x = Decode(GgmlType::kQ4_1, b, 32);
  EXPECT_EQ(x[3], 0.5f * 5 - 1);    // low nibble of qs[3]
  EXPECT_EQ(x[19], 0.5f * 10 - 1);  // high nibble of qs[3]
  EXPECT_EQ(x[15], -1.0f);
  EXPECT_EQ(x[31], 0.5f * 15 - 1);
  for (int i = 0; i < 32; ++i) {
    const int q = i < 16 ? b[4 + i] & 0x0F : b[4 + i - 16] >> 4;
    EXPECT_EQ(x[i], 0.5f * q - 1.0f) << i;
  }
}

// Q5_0 / Q5_1 share the bits: qh = bytes {0x01, 0x00, 0x02, 0x80} sets bits 0, 17 and 31.
void FillQ5Bits(std::vector<uint8_t>& b, size_t qh_at) {
  const uint8_t qh[4] = {0x01, 0x00, 0x02, 0x80};
  std::memcpy(b.data() + qh_at, qh, 4);
  uint8_t* qs = b.data() + qh_at + 4;
  for (int i = 0; i < 16; ++i) qs[i] = static_cast<uint8_t>(0x5A ^ (i * 29));
  qs[0] = 0x3F;
  qs[1] = 0x21;
  qs[15] = 0xE7;
}

int Q5Code(const std::vector<uint8_t>& b, size_t qh_at, int i) {
  const uint32_t h =
      b[qh_at] | b[qh_at + 1] << 8 | b[qh_at + 2] << 16 | static_cast<uint32_t>(b[qh_at + 3]) << 24;
  const uint8_t byte = b[qh_at + 4 + i % 16];
  const int low4 = i < 16 ? byte & 0x0F : byte >> 4;
  return low4 + 16 * ((h >> i) & 1);
}

TEST(QuantsTest, Q5_0BlockDecodes) {
  std::vector<uint8_t> b(22, 0);  // d @0, qh @2, qs @6
  PutHalf(b, 0, kHalfQuarter);
  FillQ5Bits(b, 2);
  const auto x = Decode(GgmlType::kQ5_0, b, 32);
  EXPECT_EQ(x[0], 0.25f * (31 - 16));   // 0xF | bit 0
  EXPECT_EQ(x[1], 0.25f * (1 - 16));    // 0x1, bit 1 clear
  EXPECT_EQ(x[16], 0.25f * (3 - 16));   // high nibble of qs[0], bit 16 clear
  EXPECT_EQ(x[17], 0.25f * (18 - 16));  // 0x2 | bit 17
  EXPECT_EQ(x[31], 0.25f * (30 - 16));  // 0xE | bit 31
  EXPECT_EQ(x[15], 0.25f * (7 - 16));
  for (int i = 0; i < 32; ++i) EXPECT_EQ(x[i], 0.25f * (Q5Code(b, 2, i) - 16)) << i;
}

TEST(QuantsTest, Q5_1BlockDecodes) {
  std::vector<uint8_t> b(24, 0);  // d @0, m @2, qh @4, qs @8
  PutHalf(b, 0, kHalfHalf);
  PutHalf(b, 2, kHalfTwo);
  FillQ5Bits(b, 4);
  const auto x = Decode(GgmlType::kQ5_1, b, 32);
  EXPECT_EQ(x[0], 0.5f * 31 + 2);
  EXPECT_EQ(x[17], 0.5f * 18 + 2);
  EXPECT_EQ(x[16], 0.5f * 3 + 2);
  for (int i = 0; i < 32; ++i) EXPECT_EQ(x[i], 0.5f * Q5Code(b, 4, i) + 2.0f) << i;
}

// Q4_K / Q5_K scale bytes: sub-block 1 scale 3 / min 7, sub-block 4 scale 1 / min 2, sub-block 5
// scale 12 | 2 << 4 = 44 and min 9 | 1 << 4 = 25 (high bits in the top of bytes 1 and 5).
void FillK4Scales(uint8_t* s) {
  s[1] = 0x80 | 3;  // top bits 10: high bits of sub-block 5's scale
  s[5] = 0x40 | 7;  // top bits 01: high bits of sub-block 5's min
  s[8] = 0x21;      // sub-block 4: scale 1, min 2
  s[9] = 0x9C;      // sub-block 5: low 4 bits of scale 12, of min 9
}

// The ggml definition spelled out: j < 4 from bytes j, j + 4; j >= 4 from byte j + 4 and the top
// two bits of bytes j - 4 (scale) and j (min).
void K4ScaleMin(const uint8_t* s, int j, int* scale, int* min) {
  if (j < 4) {
    *scale = s[j] % 64;
    *min = s[j + 4] % 64;
  } else {
    *scale = s[j + 4] % 16 + 16 * (s[j - 4] / 64);
    *min = s[j + 4] / 16 + 16 * (s[j] / 64);
  }
}

TEST(QuantsTest, Q4_KBlockDecodes) {
  std::vector<uint8_t> b(144, 0);  // d @0, dmin @2, scales @4, qs @16
  PutHalf(b, 0, kHalfHalf);
  PutHalf(b, 2, kHalfQuarter);
  FillK4Scales(b.data() + 4);
  uint8_t* qs = b.data() + 16;
  qs[2] = 0xB0;   // value 34 (chunk 0, high nibble: sub-block 1) = 11
  qs[64] = 0x73;  // value 128 (sub-block 4) = 3, value 160 (sub-block 5) = 7
  const auto x = Decode(GgmlType::kQ4_K, b, 256);
  EXPECT_EQ(x[160], 0.5f * 44 * 7 - 0.25f * 25);
  EXPECT_EQ(x[34], 0.5f * 3 * 11 - 0.25f * 7);
  EXPECT_EQ(x[128], 0.5f * 1 * 3 - 0.25f * 2);
  EXPECT_EQ(x[161], -0.25f * 25);
  for (int c = 0; c < 4; ++c) {  // 64-value chunks
    for (int half = 0; half < 2; ++half) {
      int sc, mn;
      K4ScaleMin(b.data() + 4, 2 * c + half, &sc, &mn);
      for (int l = 0; l < 32; ++l) {
        const int q = half == 0 ? qs[32 * c + l] % 16 : qs[32 * c + l] / 16;
        EXPECT_EQ(x[64 * c + 32 * half + l], 0.5f * sc * q - 0.25f * mn) << c << " " << l;
      }
    }
  }
}

TEST(QuantsTest, Q5_KBlockDecodes) {
  std::vector<uint8_t> b(176, 0);  // d @0, dmin @2, scales @4, qh @16, qs @48
  PutHalf(b, 0, kHalfHalf);
  PutHalf(b, 2, kHalfQuarter);
  FillK4Scales(b.data() + 4);
  uint8_t* qh = b.data() + 16;
  uint8_t* qs = b.data() + 48;
  qs[64] = 0x73;
  qh[0] = 1 << 5;  // bit 4 of value 160 (sub-block 5)
  qh[2] = 1 << 1;  // bit 4 of value 34 (sub-block 1)
  qs[2] = 0xB0;
  qh[7] = 0xFF;  // bit 4 of value 32j + 7 in every sub-block
  const auto x = Decode(GgmlType::kQ5_K, b, 256);
  EXPECT_EQ(x[160], 0.5f * 44 * (7 + 16) - 0.25f * 25);
  EXPECT_EQ(x[128], 0.5f * 1 * 3 - 0.25f * 2);
  EXPECT_EQ(x[34], 0.5f * 3 * (11 + 16) - 0.25f * 7);
  EXPECT_EQ(x[167], 0.5f * 44 * 16 - 0.25f * 25);
  for (int c = 0; c < 4; ++c) {
    for (int half = 0; half < 2; ++half) {
      const int j = 2 * c + half;
      int sc, mn;
      K4ScaleMin(b.data() + 4, j, &sc, &mn);
      for (int l = 0; l < 32; ++l) {
        const int low = half == 0 ? qs[32 * c + l] % 16 : qs[32 * c + l] / 16;
        const int high = (qh[l] >> j) & 1;
        EXPECT_EQ(x[32 * j + l], 0.5f * sc * (low + 16 * high) - 0.25f * mn) << j << " " << l;
      }
    }
  }
}

TEST(QuantsTest, Q6_KBlockDecodes) {
  std::vector<uint8_t> b(210, 0);  // ql @0, qh @128, scales @192, d @208
  PutHalf(b, 208, kHalfQuarter);
  uint8_t* ql = b.data();
  uint8_t* qh = b.data() + 128;
  auto* scales = reinterpret_cast<int8_t*>(b.data() + 192);
  for (int s = 0; s < 16; ++s) scales[s] = static_cast<int8_t>(s - 8);
  scales[9] = 7;
  scales[11] = 2;
  scales[13] = -3;
  scales[15] = -1;
  // Second half (values 128..255), l = 18: ql[82] feeds values 146 (low) and 210 (high),
  // ql[114] values 178 (low) and 242 (high); qh[50] holds 2 bits for each of the four.
  ql[82] = 0x59;
  ql[114] = 0xC4;
  qh[50] = 0x21;  // value 146: 1, 178: 0, 210: 2, 242: 0
  for (int i = 0; i < 16; ++i) ql[i] = static_cast<uint8_t>(i * 37);
  const auto x = Decode(GgmlType::kQ6_K, b, 256);
  EXPECT_EQ(x[146], 0.25f * 7 * ((9 | 1 << 4) - 32));
  EXPECT_EQ(x[178], 0.25f * 2 * (4 - 32));
  EXPECT_EQ(x[210], 0.25f * -3 * ((5 | 2 << 4) - 32));
  EXPECT_EQ(x[242], 0.25f * -1 * (12 - 32));
  for (int half = 0; half < 2; ++half) {
    for (int l = 0; l < 32; ++l) {
      const uint8_t a = ql[64 * half + l], c = ql[64 * half + 32 + l], h = qh[32 * half + l];
      const int q[4] = {(a & 15) | (h & 3) << 4, (c & 15) | ((h >> 2) & 3) << 4,
                        (a >> 4) | ((h >> 4) & 3) << 4, (c >> 4) | ((h >> 6) & 3) << 4};
      for (int k = 0; k < 4; ++k) {
        const int i = 128 * half + 32 * k + l;
        EXPECT_EQ(x[i], 0.25f * scales[i / 16] * (q[k] - 32)) << i;
      }
    }
  }
}

TEST(QuantsTest, Q2_KBlockDecodes) {
  std::vector<uint8_t> b(84, 0);  // scales @0, qs @16, d @80, dmin @82
  PutHalf(b, 80, kHalfHalf);
  PutHalf(b, 82, kHalfQuarter);
  b[1] = 0x20;   // sub-block 1: scale 0, min 2
  b[5] = 0x37;   // sub-block 5: scale 7, min 3
  b[13] = 0xF1;  // sub-block 13: scale 1, min 15
  uint8_t* qs = b.data() + 16;
  qs[21] = 0x30;  // bits 4-5: value 85 (sub-block 5) = 3; bits 0-1: value 21 = 0
  qs[53] = 0x10;  // second half, bits 4-5: value 128 + 85 = 213 = 1
  qs[0] = 0xE4;   // values 0, 32, 64, 96 = 0, 1, 2, 3
  const auto x = Decode(GgmlType::kQ2_K, b, 256);
  EXPECT_EQ(x[85], 0.5f * 7 * 3 - 0.25f * 3);
  EXPECT_EQ(x[21], -0.25f * 2);
  EXPECT_EQ(x[213], 0.5f * 1 * 1 - 0.25f * 15);
  for (int i = 0; i < 256; ++i) {
    const uint8_t byte = qs[32 * (i / 128) + i % 32];
    const int q = (byte >> (2 * ((i % 128) / 32))) & 3;
    const uint8_t s = b[i / 16];
    EXPECT_EQ(x[i], 0.5f * (s & 15) * q - 0.25f * (s >> 4)) << i;
  }
}

TEST(QuantsTest, Q3_KBlockDecodes) {
  std::vector<uint8_t> b(110, 0);  // hmask @0, qs @32, scales @96, d @108
  PutHalf(b, 108, kHalfHalf);
  uint8_t* hmask = b.data();
  uint8_t* qs = b.data() + 32;
  uint8_t* sc = b.data() + 96;
  sc[5] = 0xA3;      // low 4 bits: sub-block 5 = 3, sub-block 13 = 10
  sc[9] = 0x08;      // bits 2-3: high bits of sub-block 5 = 2; bits 6-7: sub-block 13 = 0
  qs[20] = 0x10;     // value 84 (first half, group 2, l = 20): low bits 1
  qs[21] = 0x30;     // value 85: low bits 3
  qs[53] = 0x20;     // value 213 (second half, group 2, l = 21): low bits 2
  hmask[21] = 0x44;  // bit 2: value 85, bit 6: value 213 (high bit set: no -4)
  const auto x = Decode(GgmlType::kQ3_K, b, 256);
  EXPECT_EQ(x[85], 0.5f * (35 - 32) * 3);
  EXPECT_EQ(x[84], 0.5f * (35 - 32) * (1 - 4));
  EXPECT_EQ(x[213], 0.5f * (10 - 32) * 2);
  EXPECT_EQ(x[0], 0.5f * (0 - 32) * (0 - 4));
  for (int i = 0; i < 256; ++i) {
    const int s = i / 16, group = (i % 128) / 32, l = i % 32;
    const int low4 = s < 8 ? sc[s] & 15 : sc[s - 8] >> 4;
    const int high2 = (sc[8 + s % 4] >> (2 * (s / 4))) & 3;
    const int low = (qs[32 * (i / 128) + l] >> (2 * group)) & 3;
    const int hbit = (hmask[l] >> (4 * (i / 128) + group)) & 1;
    EXPECT_EQ(x[i], 0.5f * ((low4 | high2 << 4) - 32) * (low - (hbit ? 0 : 4))) << i;
  }
}

// ---- round trips ------------------------------------------------------------------------------

struct Bound {
  GgmlType type;
  double rel_rms;  // RMS error / RMS input on N(0, 1)
};

// Bounds from the bit widths: a b-bit fit over the range R of a group has step R / (2^b - 1) and
// RMS error about step / sqrt(12). For 32 Gaussians E[R] ~ 4.1: 4 bits ~0.079, 5 bits ~0.038;
// 16 Gaussians, symmetric codes from the largest magnitude (E ~ 2.0): Q6_K step 2 / 32 ~ 0.018,
// Q3_K step 2 / 4 ~ 0.14; Q2_K over R ~ 3.5 with 3 steps ~ 0.34. Each bound adds ~50% margin
// (a scale search can only do better than the full-range fit, sub-block scale rounding a little
// worse).
constexpr Bound kBounds[] = {
    {GgmlType::kQ4_1, 0.12}, {GgmlType::kQ5_0, 0.06}, {GgmlType::kQ5_1, 0.06},
    {GgmlType::kQ2_K, 0.45}, {GgmlType::kQ3_K, 0.21}, {GgmlType::kQ4_K, 0.12},
    {GgmlType::kQ5_K, 0.06}, {GgmlType::kQ6_K, 0.03},
};

std::vector<float> RoundTrip(GgmlType type, const std::vector<float>& x) {
  const auto traits = GetTypeTraits(static_cast<uint32_t>(type));
  const int64_t n = static_cast<int64_t>(x.size());
  const int64_t bytes = n / traits->block_size * traits->type_size;
  std::vector<uint8_t> q(bytes + 16, 0xCD);
  EXPECT_EQ(QuantizeRow(type, x.data(), q.data(), n), bytes) << TypeName(type);
  for (int i = 0; i < 16; ++i) EXPECT_EQ(q[bytes + i], 0xCD) << "wrote past the row";
  std::vector<float> y(n, NAN);
  DequantizeRow(type, q.data(), y.data(), n);
  return y;
}

TEST(QuantsTest, GaussianRoundTripErrorIsBounded) {
  std::mt19937 rng(1234);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (const Bound& bound : kBounds) {
    for (int n : {512, 1024}) {
      std::vector<float> x(n);
      for (float& v : x) v = normal(rng);
      const auto y = RoundTrip(bound.type, x);
      double err = 0, ref = 0;
      for (int i = 0; i < n; ++i) {
        ASSERT_TRUE(std::isfinite(y[i])) << TypeName(bound.type) << " " << i;
        err += (x[i] - y[i]) * (x[i] - y[i]);
        ref += x[i] * x[i];
      }
      const double rel = std::sqrt(err / ref);
      EXPECT_LT(rel, bound.rel_rms) << TypeName(bound.type) << " n=" << n;
      EXPECT_GT(rel, 0.0) << TypeName(bound.type);  // it did quantize
    }
  }
}

TEST(QuantsTest, ZeroAndConstantRowsRoundTrip) {
  for (const Bound& bound : kBounds) {
    const auto zeros = RoundTrip(bound.type, std::vector<float>(512, 0.0f));
    for (int i = 0; i < 512; ++i) ASSERT_EQ(zeros[i], 0.0f) << TypeName(bound.type) << " " << i;
    // A constant (one f16 value) is exact for the formats with an offset, close for the others.
    const auto ones = RoundTrip(bound.type, std::vector<float>(512, -1.5f));
    for (int i = 0; i < 512; ++i) {
      ASSERT_NEAR(ones[i], -1.5f, 0.02f) << TypeName(bound.type) << " " << i;
    }
  }
}

TEST(QuantsTest, PositiveRowsKeepKQuantMinsUnsigned) {
  // K-quant mins are unsigned (x = d * sc * q - dmin * m): all-positive sub-blocks fit offset 0.
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> dist(0.5f, 2.5f);
  std::vector<float> x(1024);
  for (float& v : x) v = dist(rng);
  for (GgmlType t : {GgmlType::kQ2_K, GgmlType::kQ4_K, GgmlType::kQ5_K}) {
    const auto y = RoundTrip(t, x);
    const int bits = t == GgmlType::kQ2_K ? 2 : t == GgmlType::kQ4_K ? 4 : 5;
    const double step = 2.5 / ((1 << bits) - 1);  // codes span [0, max]
    double err2 = 0;
    for (int i = 0; i < 1024; ++i) {
      // 1.5 steps: the least-squares fit may clip the largest value of a sub-block by a step.
      ASSERT_NEAR(y[i], x[i], 1.5 * step) << TypeName(t) << " " << i;
      err2 += (y[i] - x[i]) * static_cast<double>(y[i] - x[i]);
    }
    EXPECT_LT(std::sqrt(err2 / 1024), 0.45 * step) << TypeName(t);  // uniform error: 0.29 step
  }
}

// ---- real files quantized by llama.cpp --------------------------------------------------------

std::vector<float> DequantizeTensor(const GgufTensorInfo& t) {
  std::vector<float> out(t.num_elements);
  DequantizeRow(t.type, t.data, out.data(), t.num_elements);
  return out;
}

bool IsKQuant(GgmlType t) { return t == GgmlType::kQ4_K || t == GgmlType::kQ6_K; }

std::unique_ptr<GgufFile> OpenFixture(const std::string& name) {
  const std::string path = testing::SharedPath("fixtures/real-formats/" + name);
  if (!testing::Exists(path)) return nullptr;
  auto file = GgufFile::Open(path);
  EXPECT_TRUE(file.ok()) << file.status();
  return file.ok() ? std::move(*file) : nullptr;
}

TEST(QuantsTest, RealKQuantFilesDecodeToTheOriginalDistribution) {
  for (const char* name : {"tiny-rope-freqs-Q4_K_M.gguf", "tiny-rope-freqs-Q6_K.gguf"}) {
    auto file = OpenFixture(name);
    if (file == nullptr) GTEST_SKIP() << "shared fixtures absent";
    int checked = 0;
    for (const GgufTensorInfo& t : file->tensors()) {
      if (!IsKQuant(t.type)) continue;
      ASSERT_EQ(t.ne[0] % kQK_K, 0) << t.name;
      const auto x = DequantizeTensor(t);
      double sum = 0, sum2 = 0, amax = 0;
      for (float v : x) {
        ASSERT_TRUE(std::isfinite(v)) << t.name;
        sum += v;
        sum2 += static_cast<double>(v) * v;
        amax = std::max(amax, static_cast<double>(std::fabs(v)));
      }
      const double mean = sum / x.size();
      const double std = std::sqrt(sum2 / x.size() - mean * mean);
      // Weights were N(0, 0.05); the smallest tensor has 32768 values (sd of the mean 0.0003).
      EXPECT_LT(std::fabs(mean), 0.002) << name << " " << t.name;
      EXPECT_NEAR(std, 0.05, 0.05 * 0.04) << name << " " << t.name;
      EXPECT_LT(amax, 0.05 * 10) << name << " " << t.name;
      ++checked;
    }
    EXPECT_EQ(checked, 15) << name;
  }
}

TEST(QuantsTest, RealQ4_KAndQ6_KFilesAgree) {
  auto q4 = OpenFixture("tiny-rope-freqs-Q4_K_M.gguf");
  auto q6 = OpenFixture("tiny-rope-freqs-Q6_K.gguf");
  if (q4 == nullptr || q6 == nullptr) GTEST_SKIP() << "shared fixtures absent";
  int compared = 0;
  for (const GgufTensorInfo& a : q4->tensors()) {
    const GgufTensorInfo* b = q6->FindTensor(a.name);
    ASSERT_NE(b, nullptr) << a.name;
    if (!IsKQuant(a.type)) continue;
    ASSERT_EQ(b->type, GgmlType::kQ6_K) << a.name;
    ASSERT_EQ(a.num_elements, b->num_elements) << a.name;
    const auto x = DequantizeTensor(a);
    const auto y = DequantizeTensor(*b);
    double diff2 = 0;
    for (size_t i = 0; i < x.size(); ++i) diff2 += (x[i] - y[i]) * static_cast<double>(x[i] - y[i]);
    const double rms = std::sqrt(diff2 / x.size());
    if (a.type == GgmlType::kQ6_K) {
      EXPECT_EQ(rms, 0.0) << a.name;  // same type from the same original: same bytes
    } else {
      // Both approximate the same N(0, 0.05) weights: Q4_K within ~8% of 0.05, Q6_K ~2%.
      EXPECT_LT(rms, 0.05 * 0.12) << a.name;
    }
    ++compared;
  }
  EXPECT_EQ(compared, 15);
  // The attention query weights in particular (Q4_K in one file, Q6_K in the other).
  const GgufTensorInfo* attn_q = q4->FindTensor("blk.0.attn_q.weight");
  ASSERT_NE(attn_q, nullptr);
  EXPECT_EQ(attn_q->type, GgmlType::kQ4_K);
}

}  // namespace
}  // namespace chorus
