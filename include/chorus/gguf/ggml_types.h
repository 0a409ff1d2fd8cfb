// Tensor element types as GGUF stores them (ggml's type ids), their block layouts, and the
// reference (scalar) conversions: float <-> F16/BF16, quantize and dequantize Q8_0 / Q4_0 here,
// and Q4_1 / Q5_0 / Q5_1 / Q2_K..Q6_K in src/gguf/quants.cc and src/gguf/dequantize.cc.
//
// Block layouts (little-endian, packed; f16 = IEEE half; i < 16 unless said otherwise):
//   Q8_0: { f16 d; int8 qs[32]; }            34 bytes / 32 values, x = d * qs[i]
//   Q4_0: { f16 d; uint8 qs[16]; }           18 bytes / 32 values,
//         x[i] = d * ((qs[i] & 0xF) - 8), x[i + 16] = d * ((qs[i] >> 4) - 8)
//   Q4_1: { f16 d, m; uint8 qs[16]; }        20 bytes / 32 values,
//         x[i] = d * (qs[i] & 0xF) + m, x[i + 16] = d * (qs[i] >> 4) + m
//   Q5_0: { f16 d; uint8 qh[4]; uint8 qs[16]; }   22 bytes / 32 values; h = qh as a LE uint32,
//         q[i] = (qs[i] & 0xF) | ((h >> i) & 1) << 4,
//         q[i + 16] = (qs[i] >> 4) | ((h >> (i + 16)) & 1) << 4, x = d * (q - 16)
//   Q5_1: { f16 d, m; uint8 qh[4]; uint8 qs[16]; }  24 bytes / 32 values, q as Q5_0, x = d * q + m
// K-quants: super-blocks of 256 values (kQK_K) in sub-blocks of 16 or 32:
//   Q2_K: { uint8 scales[16]; uint8 qs[64]; f16 d, dmin; }          84 bytes. Sub-block s (16
//         values): x = d * (scales[s] & 0xF) * q - dmin * (scales[s] >> 4), q 2 bits: value
//         128h + 32k + l (l < 32) is (qs[32h + l] >> 2k) & 3.
//   Q3_K: { uint8 hmask[32]; uint8 qs[64]; uint8 scales[12]; f16 d; }  110 bytes. Sub-block s (16
//         values): x = d * (sc[s] - 32) * q, sc 6 bits: low 4 = scales[s % 8] >> (4 * (s / 8)),
//         high 2 = scales[8 + s % 4] >> (2 * (s / 4)). Value 128h + 32k + l: low 2 bits as Q2_K,
//         q = low - (bit (4h + k) of hmask[l] ? 0 : 4).
//   Q4_K: { f16 d, dmin; uint8 scales[12]; uint8 qs[128]; }        144 bytes. Sub-block j (32
//         values) has 6-bit scale sc and min m: j < 4: sc = scales[j] & 63, m = scales[j + 4] & 63;
//         j >= 4: sc = (scales[j + 4] & 0xF) | (scales[j - 4] >> 6) << 4,
//         m = (scales[j + 4] >> 4) | (scales[j] >> 6) << 4. x = d * sc * q - dmin * m. Chunk c
//         (64 values) is qs[32c..32c+31]: low nibbles are sub-block 2c, high nibbles 2c + 1.
//   Q5_K: { f16 d, dmin; uint8 scales[12]; uint8 qh[32]; uint8 qs[128]; }  176 bytes. As Q4_K,
//         plus bit 4 of value 32j + l from bit j of qh[l].
//   Q6_K: { uint8 ql[128]; uint8 qh[64]; int8 scales[16]; f16 d; }  210 bytes. x = d * scales[s]
//         * (q - 32), s = index / 16. Half h (128 values), value 128h + 32k + l (l < 32): low 4
//         bits from ql[64h + l + 32 (k & 1)] (low nibble for k < 2, high for k >= 2), high 2 bits
//         (qh[32h + l] >> 2k) & 3.
#pragma once

#include <cstdint>
#include <cstring>
#include <optional>
#include <string_view>

namespace chorus {

enum class GgmlType : uint32_t {
  kF32 = 0,
  kF16 = 1,
  kQ4_0 = 2,
  kQ4_1 = 3,
  kQ5_0 = 6,
  kQ5_1 = 7,
  kQ8_0 = 8,
  kQ8_1 = 9,
  kQ2_K = 10,
  kQ3_K = 11,
  kQ4_K = 12,
  kQ5_K = 13,
  kQ6_K = 14,
  kQ8_K = 15,
  kI8 = 24,
  kI16 = 25,
  kI32 = 26,
  kI64 = 27,
  kF64 = 28,
  kBF16 = 30,
};

struct GgmlTypeTraits {
  std::string_view name;
  int64_t block_size;  // values per block
  int64_t type_size;   // bytes per block
  bool supported;      // the forward pass can compute with it
};

// Traits of a type id read from a file; nullopt for ids this build does not know.
std::optional<GgmlTypeTraits> GetTypeTraits(uint32_t type_id);
std::string_view TypeName(GgmlType type);
// Parses "f32", "F16", "q8_0", ... (for tools); nullopt when unknown.
std::optional<GgmlType> ParseTypeName(std::string_view name);

inline constexpr int64_t kQK = 32;  // values per Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 block

struct BlockQ8_0 {
  uint16_t d;
  int8_t qs[kQK];
};
struct BlockQ4_0 {
  uint16_t d;
  uint8_t qs[kQK / 2];
};
struct BlockQ4_1 {
  uint16_t d;
  uint16_t m;
  uint8_t qs[kQK / 2];
};
struct BlockQ5_0 {
  uint16_t d;
  uint8_t qh[4];
  uint8_t qs[kQK / 2];
};
struct BlockQ5_1 {
  uint16_t d;
  uint16_t m;
  uint8_t qh[4];
  uint8_t qs[kQK / 2];
};
static_assert(sizeof(BlockQ8_0) == 34);
static_assert(sizeof(BlockQ4_0) == 18);
static_assert(sizeof(BlockQ4_1) == 20);
static_assert(sizeof(BlockQ5_0) == 22);
static_assert(sizeof(BlockQ5_1) == 24);

inline constexpr int64_t kQK_K = 256;    // values per K-quant super-block
inline constexpr int kKScaleBytes = 12;  // packed 6-bit scales of Q3_K / Q4_K / Q5_K

struct BlockQ2_K {
  uint8_t scales[kQK_K / 16];
  uint8_t qs[kQK_K / 4];
  uint16_t d;
  uint16_t dmin;
};
struct BlockQ3_K {
  uint8_t hmask[kQK_K / 8];
  uint8_t qs[kQK_K / 4];
  uint8_t scales[kKScaleBytes];
  uint16_t d;
};
struct BlockQ4_K {
  uint16_t d;
  uint16_t dmin;
  uint8_t scales[kKScaleBytes];
  uint8_t qs[kQK_K / 2];
};
struct BlockQ5_K {
  uint16_t d;
  uint16_t dmin;
  uint8_t scales[kKScaleBytes];
  uint8_t qh[kQK_K / 8];
  uint8_t qs[kQK_K / 2];
};
struct BlockQ6_K {
  uint8_t ql[kQK_K / 2];
  uint8_t qh[kQK_K / 4];
  int8_t scales[kQK_K / 16];
  uint16_t d;
};
static_assert(sizeof(BlockQ2_K) == 84);
static_assert(sizeof(BlockQ3_K) == 110);
static_assert(sizeof(BlockQ4_K) == 144);
static_assert(sizeof(BlockQ5_K) == 176);
static_assert(sizeof(BlockQ6_K) == 210);

float HalfToFloat(uint16_t h);
uint16_t FloatToHalf(float f);  // round to nearest even
inline float Bf16ToFloat(uint16_t h) {
  uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}
uint16_t FloatToBf16(float f);  // round to nearest even, NaN kept

// Converts n floats to `type` (n must be a multiple of the block size). Returns bytes written.
int64_t QuantizeRow(GgmlType type, const float* src, void* dst, int64_t n);
// Converts n values of `type` to floats (n a multiple of the block size).
void DequantizeRow(GgmlType type, const void* src, float* dst, int64_t n);

// The per-type reference kernels behind QuantizeRow / DequantizeRow (src/gguf/quants.cc and
// src/gguf/dequantize.cc); n is a multiple of the type's block size, quantizers return the bytes
// written. The quantizers are plain least-squares fits (no importance weights), fine for tests and
// random models.
namespace quants {
void DequantizeQ4_1(const BlockQ4_1* src, float* dst, int64_t n);
void DequantizeQ5_0(const BlockQ5_0* src, float* dst, int64_t n);
void DequantizeQ5_1(const BlockQ5_1* src, float* dst, int64_t n);
void DequantizeQ2_K(const BlockQ2_K* src, float* dst, int64_t n);
void DequantizeQ3_K(const BlockQ3_K* src, float* dst, int64_t n);
void DequantizeQ4_K(const BlockQ4_K* src, float* dst, int64_t n);
void DequantizeQ5_K(const BlockQ5_K* src, float* dst, int64_t n);
void DequantizeQ6_K(const BlockQ6_K* src, float* dst, int64_t n);
int64_t QuantizeQ4_1(const float* src, BlockQ4_1* dst, int64_t n);
int64_t QuantizeQ5_0(const float* src, BlockQ5_0* dst, int64_t n);
int64_t QuantizeQ5_1(const float* src, BlockQ5_1* dst, int64_t n);
int64_t QuantizeQ2_K(const float* src, BlockQ2_K* dst, int64_t n);
int64_t QuantizeQ3_K(const float* src, BlockQ3_K* dst, int64_t n);
int64_t QuantizeQ4_K(const float* src, BlockQ4_K* dst, int64_t n);
int64_t QuantizeQ5_K(const float* src, BlockQ5_K* dst, int64_t n);
int64_t QuantizeQ6_K(const float* src, BlockQ6_K* dst, int64_t n);
}  // namespace quants

}  // namespace chorus
