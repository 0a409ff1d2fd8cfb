// Tensor element types as GGUF stores them (ggml's type ids), their block layouts, and the
// reference (scalar) conversions: float <-> F16/BF16, quantize and dequantize Q8_0 / Q4_0.
//
// Block layouts (little-endian, packed):
//   Q8_0: { f16 d; int8 qs[32]; }            34 bytes / 32 values, x = d * qs[i]
//   Q4_0: { f16 d; uint8 qs[16]; }           18 bytes / 32 values,
//         x[i] = d * ((qs[i] & 0xF) - 8), x[i + 16] = d * ((qs[i] >> 4) - 8), i < 16
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

inline constexpr int64_t kQK = 32;  // values per Q8_0 / Q4_0 block

struct BlockQ8_0 {
  uint16_t d;
  int8_t qs[kQK];
};
struct BlockQ4_0 {
  uint16_t d;
  uint8_t qs[kQK / 2];
};
static_assert(sizeof(BlockQ8_0) == 34);
static_assert(sizeof(BlockQ4_0) == 18);

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

}  // namespace chorus
