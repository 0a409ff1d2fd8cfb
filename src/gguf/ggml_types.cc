#include "chorus/gguf/ggml_types.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <string>

#include "chorus/core/status.h"

namespace chorus {
namespace {

struct Entry {
  uint32_t id;
  GgmlTypeTraits traits;
};

constexpr Entry kTypes[] = {
    {0, {"F32", 1, 4, true}},       {1, {"F16", 1, 2, true}},        {2, {"Q4_0", 32, 18, true}},
    {3, {"Q4_1", 32, 20, true}},    {6, {"Q5_0", 32, 22, true}},     {7, {"Q5_1", 32, 24, true}},
    {8, {"Q8_0", 32, 34, true}},    {9, {"Q8_1", 32, 36, false}},    {10, {"Q2_K", 256, 84, true}},
    {11, {"Q3_K", 256, 110, true}}, {12, {"Q4_K", 256, 144, true}},  {13, {"Q5_K", 256, 176, true}},
    {14, {"Q6_K", 256, 210, true}}, {15, {"Q8_K", 256, 292, false}}, {24, {"I8", 1, 1, false}},
    {25, {"I16", 1, 2, false}},     {26, {"I32", 1, 4, false}},      {27, {"I64", 1, 8, false}},
    {28, {"F64", 1, 8, false}},     {30, {"BF16", 1, 2, true}},
};

}  // namespace

std::optional<GgmlTypeTraits> GetTypeTraits(uint32_t type_id) {
  for (const auto& e : kTypes) {
    if (e.id == type_id) return e.traits;
  }
  return std::nullopt;
}

std::string_view TypeName(GgmlType type) {
  auto t = GetTypeTraits(static_cast<uint32_t>(type));
  return t ? t->name : std::string_view("UNKNOWN");
}

std::optional<GgmlType> ParseTypeName(std::string_view name) {
  std::string upper(name);
  for (char& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  for (const auto& e : kTypes) {
    if (e.traits.name == upper) return static_cast<GgmlType>(e.id);
  }
  return std::nullopt;
}

float HalfToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000) << 16;
  const uint32_t exp = (h >> 10) & 0x1f;
  uint32_t mant = h & 0x3ff;
  uint32_t bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal: renormalize
      int e = -1;
      do {
        ++e;
        mant <<= 1;
      } while ((mant & 0x400) == 0);
      bits = sign | (static_cast<uint32_t>(127 - 15 - e) << 23) | ((mant & 0x3ff) << 13);
    }
  } else if (exp == 31) {
    bits = sign | 0x7f800000 | (mant << 13);
  } else {
    bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

uint16_t FloatToHalf(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint32_t sign = (x >> 16) & 0x8000;
  const uint32_t abs = x & 0x7fffffff;
  if (abs >= 0x7f800000)
    return static_cast<uint16_t>(sign | 0x7c00 | (abs > 0x7f800000 ? 0x200 : 0));
  if (abs >= 0x477ff000) return static_cast<uint16_t>(sign | 0x7c00);  // overflow to inf
  if (abs < 0x38800000) {                                              // subnormal or zero in half
    if (abs < 0x33000000) return static_cast<uint16_t>(sign);
    const uint32_t e = abs >> 23;
    const uint32_t m = (abs & 0x7fffff) | 0x800000;
    const uint32_t sh = 126 - e;  // value / 2^-24 = m * 2^(e - 126)
    uint32_t half_m = m >> sh;
    const uint32_t rem = m & ((1u << sh) - 1);
    const uint32_t halfway = 1u << (sh - 1);
    if (rem > halfway || (rem == halfway && (half_m & 1))) ++half_m;
    return static_cast<uint16_t>(sign | half_m);
  }
  uint32_t h = ((abs >> 13) - (112u << 10));
  const uint32_t rem = abs & 0x1fff;
  if (rem > 0x1000 || (rem == 0x1000 && (h & 1))) ++h;
  return static_cast<uint16_t>(sign | h);
}

uint16_t FloatToBf16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  if ((x & 0x7fffffff) > 0x7f800000) return static_cast<uint16_t>((x >> 16) | 0x40);
  x += 0x7fff + ((x >> 16) & 1);
  return static_cast<uint16_t>(x >> 16);
}

int64_t QuantizeRow(GgmlType type, const float* src, void* dst, int64_t n) {
  switch (type) {
    case GgmlType::kF32:
      std::memcpy(dst, src, n * 4);
      return n * 4;
    case GgmlType::kF16: {
      auto* out = static_cast<uint16_t*>(dst);
      for (int64_t i = 0; i < n; ++i) out[i] = FloatToHalf(src[i]);
      return n * 2;
    }
    case GgmlType::kBF16: {
      auto* out = static_cast<uint16_t*>(dst);
      for (int64_t i = 0; i < n; ++i) out[i] = FloatToBf16(src[i]);
      return n * 2;
    }
    case GgmlType::kQ8_0: {
      CHORUS_CHECK(n % kQK == 0);
      auto* out = static_cast<BlockQ8_0*>(dst);
      for (int64_t b = 0; b < n / kQK; ++b) {
        const float* x = src + b * kQK;
        float amax = 0;
        for (int i = 0; i < kQK; ++i) amax = std::max(amax, std::fabs(x[i]));
        const float d = amax / 127.0f;
        const float id = d != 0 ? 1.0f / d : 0.0f;
        out[b].d = FloatToHalf(d);
        for (int i = 0; i < kQK; ++i) out[b].qs[i] = static_cast<int8_t>(std::lround(x[i] * id));
      }
      return n / kQK * static_cast<int64_t>(sizeof(BlockQ8_0));
    }
    case GgmlType::kQ4_0: {
      CHORUS_CHECK(n % kQK == 0);
      auto* out = static_cast<BlockQ4_0*>(dst);
      for (int64_t b = 0; b < n / kQK; ++b) {
        const float* x = src + b * kQK;
        float amax = 0, max = 0;  // signed value of largest magnitude maps to -8
        for (int i = 0; i < kQK; ++i) {
          if (std::fabs(x[i]) > amax) {
            amax = std::fabs(x[i]);
            max = x[i];
          }
        }
        const float d = max / -8.0f;
        const float id = d != 0 ? 1.0f / d : 0.0f;
        out[b].d = FloatToHalf(d);
        for (int i = 0; i < kQK / 2; ++i) {
          const int q0 = std::min(15, static_cast<int>(x[i] * id + 8.5f));
          const int q1 = std::min(15, static_cast<int>(x[i + kQK / 2] * id + 8.5f));
          out[b].qs[i] = static_cast<uint8_t>(q0 | (q1 << 4));
        }
      }
      return n / kQK * static_cast<int64_t>(sizeof(BlockQ4_0));
    }
    case GgmlType::kQ4_1:
      return quants::QuantizeQ4_1(src, static_cast<BlockQ4_1*>(dst), n);
    case GgmlType::kQ5_0:
      return quants::QuantizeQ5_0(src, static_cast<BlockQ5_0*>(dst), n);
    case GgmlType::kQ5_1:
      return quants::QuantizeQ5_1(src, static_cast<BlockQ5_1*>(dst), n);
    case GgmlType::kQ2_K:
      return quants::QuantizeQ2_K(src, static_cast<BlockQ2_K*>(dst), n);
    case GgmlType::kQ3_K:
      return quants::QuantizeQ3_K(src, static_cast<BlockQ3_K*>(dst), n);
    case GgmlType::kQ4_K:
      return quants::QuantizeQ4_K(src, static_cast<BlockQ4_K*>(dst), n);
    case GgmlType::kQ5_K:
      return quants::QuantizeQ5_K(src, static_cast<BlockQ5_K*>(dst), n);
    case GgmlType::kQ6_K:
      return quants::QuantizeQ6_K(src, static_cast<BlockQ6_K*>(dst), n);
    default:
      CHORUS_CHECK(false && "QuantizeRow: unsupported type");
  }
  return 0;
}

void DequantizeRow(GgmlType type, const void* src, float* dst, int64_t n) {
  switch (type) {
    case GgmlType::kF32:
      std::memcpy(dst, src, n * 4);
      return;
    case GgmlType::kF16: {
      const auto* in = static_cast<const uint16_t*>(src);
      for (int64_t i = 0; i < n; ++i) dst[i] = HalfToFloat(in[i]);
      return;
    }
    case GgmlType::kBF16: {
      const auto* in = static_cast<const uint16_t*>(src);
      for (int64_t i = 0; i < n; ++i) dst[i] = Bf16ToFloat(in[i]);
      return;
    }
    case GgmlType::kQ8_0: {
      const auto* in = static_cast<const BlockQ8_0*>(src);
      for (int64_t b = 0; b < n / kQK; ++b) {
        const float d = HalfToFloat(in[b].d);
        for (int i = 0; i < kQK; ++i) dst[b * kQK + i] = d * in[b].qs[i];
      }
      return;
    }
    case GgmlType::kQ4_0: {
      const auto* in = static_cast<const BlockQ4_0*>(src);
      for (int64_t b = 0; b < n / kQK; ++b) {
        const float d = HalfToFloat(in[b].d);
        for (int i = 0; i < kQK / 2; ++i) {
          dst[b * kQK + i] = d * ((in[b].qs[i] & 0xf) - 8);
          dst[b * kQK + i + kQK / 2] = d * ((in[b].qs[i] >> 4) - 8);
        }
      }
      return;
    }
    case GgmlType::kQ4_1:
      return quants::DequantizeQ4_1(static_cast<const BlockQ4_1*>(src), dst, n);
    case GgmlType::kQ5_0:
      return quants::DequantizeQ5_0(static_cast<const BlockQ5_0*>(src), dst, n);
    case GgmlType::kQ5_1:
      return quants::DequantizeQ5_1(static_cast<const BlockQ5_1*>(src), dst, n);
    case GgmlType::kQ2_K:
      return quants::DequantizeQ2_K(static_cast<const BlockQ2_K*>(src), dst, n);
    case GgmlType::kQ3_K:
      return quants::DequantizeQ3_K(static_cast<const BlockQ3_K*>(src), dst, n);
    case GgmlType::kQ4_K:
      return quants::DequantizeQ4_K(static_cast<const BlockQ4_K*>(src), dst, n);
    case GgmlType::kQ5_K:
      return quants::DequantizeQ5_K(static_cast<const BlockQ5_K*>(src), dst, n);
    case GgmlType::kQ6_K:
      return quants::DequantizeQ6_K(static_cast<const BlockQ6_K*>(src), dst, n);
    default:
      CHORUS_CHECK(false && "DequantizeRow: unsupported type");
  }
}

}  // namespace chorus
