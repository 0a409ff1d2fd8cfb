// CPU matmul kernels, int8 path over repacked Q8_0 / Q4_0 weights: 8 rows interleaved per
// 32-value block, so one VNNI dot product (dpbusd) serves 4 rows, an activation block is loaded
// once for 8 rows, and the 8 rows' scales convert and multiply as one vector.
//
// Packed layout: row group g (rows 8g..8g+7), block b is a record at (g * nb + b) * record bytes:
//   scales   8 x f16, slot s holding row kSlotRow[s] (the order the horizontal add leaves);
//   quants   for row half h (rows 4h..4h+3) and 8-value chunk c (values 8c..8c+7): 32 bytes,
//            row 4h+k's 8 values at byte 8k. Values are unsigned: Q8_0 as q + 128, Q4_0 as its
//            nibble (q + 8); Q4_0 keeps two chunks per byte (chunk c low nibble, c + 2 high), so
//            a record is the same size as the 8 original blocks.
// dpbusd multiplies unsigned weights by signed activations; the offset comes back out as
// offset * sum(x) per block, which the activation block carries (ActBlockQ8::s = d * sum).
#include <immintrin.h>

#include <cassert>
#include <cstring>

#include "src/backends/cpu/cpu_int8_packed.h"
#include "src/backends/cpu/cpu_simd.h"

namespace chorus::cpu {
namespace {

constexpr int kSlotRow[8] = {0, 1, 4, 5, 2, 3, 6, 7};

constexpr int64_t RecordBytes(GgmlType type) { return 16 + (type == GgmlType::kQ8_0 ? 256 : 128); }

#if CHORUS_INT8_PACKED
inline __m256i Dpbusd(__m256i acc, __m256i u, __m256i s) {
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
  return _mm256_dpbusd_epi32(acc, u, s);
#else
  return _mm256_dpbusd_avx_epi32(acc, u, s);
#endif
}

// One row group against kNt activation rows; acc lane s accumulates row kSlotRow[s].
template <GgmlType kType, int kNt>
void GroupDots(const uint8_t* rec, int64_t nb, const ActBlockQ8* const* x, float* res,
               int64_t out_stride) {
  constexpr int64_t kRec = RecordBytes(kType);
  constexpr float kOffset = kType == GgmlType::kQ8_0 ? 128.0f : 8.0f;
  __m256 acc[kNt];
#pragma GCC unroll 4
  for (int t = 0; t < kNt; ++t) acc[t] = _mm256_setzero_ps();
  const __m256i nib = _mm256_set1_epi8(0x0f);
  for (int64_t b = 0; b < nb; ++b, rec += kRec) {
    const __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(rec)));
    __m256i wv[2][4];
    if constexpr (kType == GgmlType::kQ8_0) {
#pragma GCC unroll 8
      for (int i = 0; i < 8; ++i) {
        wv[i / 4][i % 4] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(rec + 16 + 32 * i));
      }
    } else {
#pragma GCC unroll 4
      for (int i = 0; i < 4; ++i) {
        const __m256i l = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(rec + 16 + 32 * i));
        wv[i / 2][i % 2] = _mm256_and_si256(l, nib);
        wv[i / 2][i % 2 + 2] = _mm256_and_si256(_mm256_srli_epi16(l, 4), nib);
      }
    }
#pragma GCC unroll 4
    for (int t = 0; t < kNt; ++t) {
      const ActBlockQ8& xb = x[t][b];
      __m256i s0 = _mm256_setzero_si256(), s1 = _mm256_setzero_si256();
#pragma GCC unroll 4
      for (int c = 0; c < 4; ++c) {
        int64_t chunk;
        std::memcpy(&chunk, xb.qs + 8 * c, 8);
        const __m256i xc = _mm256_set1_epi64x(chunk);
        s0 = Dpbusd(s0, wv[0][c], xc);
        s1 = Dpbusd(s1, wv[1][c], xc);
      }
      // [r0 r0 r1 r1 | r2 r2 r3 r3] + [r4 r4 r5 r5 | r6 r6 r7 r7] -> [r0 r1 r4 r5 | r2 r3 r6 r7]
      const __m256 dot = _mm256_cvtepi32_ps(_mm256_hadd_epi32(s0, s1));
      const __m256 v = _mm256_fmsub_ps(dot, _mm256_set1_ps(xb.d), _mm256_set1_ps(kOffset * xb.s));
      acc[t] = _mm256_fmadd_ps(dw, v, acc[t]);
    }
  }
#pragma GCC unroll 4
  for (int t = 0; t < kNt; ++t) {
    alignas(32) float lanes[8];
    _mm256_store_ps(lanes, acc[t]);
    for (int s = 0; s < 8; ++s) res[t * out_stride + kSlotRow[s]] = lanes[s];
  }
}

template <GgmlType kType>
void MatMulPacked(const WeightTensor& w, const uint8_t* packed, const ActBlockQ8* xq, int m,
                  float* out, int64_t out_stride, int64_t row_begin, int64_t row_end) {
  const int64_t nb = w.cols / kQK;
  constexpr int64_t kRec = RecordBytes(kType);
  assert(row_begin % 8 == 0 && row_end % 8 == 0);  // a partial group would touch others' rows
  for (int64_t g = row_begin / 8; g < row_end / 8; ++g) {
    const uint8_t* rec = packed + g * nb * kRec;
    ForTokenTiles(xq, nb, m, [&](auto nt, int j, const ActBlockQ8* const* x) {
      GroupDots<kType, decltype(nt)::value>(
          rec, nb, x, out + static_cast<int64_t>(j) * out_stride + 8 * g, out_stride);
    });
  }
}
#endif

}  // namespace

bool Int8PackSupported(const WeightTensor& w) {
#if CHORUS_INT8_PACKED
  return (w.type == GgmlType::kQ8_0 || w.type == GgmlType::kQ4_0) && w.rows % 8 == 0 &&
         w.cols % kQK == 0 && w.rows > 0;
#else
  (void)w;
  return false;
#endif
}

size_t Int8PackedBytes(const WeightTensor& w) {
  return static_cast<size_t>(w.rows / 8) * static_cast<size_t>(w.cols / kQK) *
         static_cast<size_t>(RecordBytes(w.type));
}

void PackInt8Rows(const WeightTensor& w, int64_t group_begin, int64_t group_end, uint8_t* out) {
  const int64_t nb = w.cols / kQK, rec_bytes = RecordBytes(w.type);
  const bool q8 = w.type == GgmlType::kQ8_0;
  const int64_t block_bytes = q8 ? sizeof(BlockQ8_0) : sizeof(BlockQ4_0);
  const auto* base = static_cast<const uint8_t*>(w.data);
  for (int64_t g = group_begin; g < group_end; ++g) {
    for (int64_t b = 0; b < nb; ++b) {
      uint8_t* rec = out + (g * nb + b) * rec_bytes;
      for (int s = 0; s < 8; ++s) {  // the f16 scale is each block's first 2 bytes
        std::memcpy(rec + 2 * s, base + (8 * g + kSlotRow[s]) * w.row_bytes + b * block_bytes, 2);
      }
      for (int h = 0; h < 2; ++h) {
        for (int k = 0; k < 4; ++k) {
          const uint8_t* qs = base + (8 * g + 4 * h + k) * w.row_bytes + b * block_bytes + 2;
          if (q8) {  // chunk c = values 8c..8c+7, stored as q + 128
            for (int c = 0; c < 4; ++c) {
              uint8_t* dst = rec + 16 + (h * 4 + c) * 32 + 8 * k;
              for (int i = 0; i < 8; ++i) dst[i] = static_cast<uint8_t>(qs[8 * c + i] ^ 0x80);
            }
          } else {  // byte j of Q4_0 holds values j (low) and j + 16 (high): chunks p and p + 2
            for (int p = 0; p < 2; ++p)
              std::memcpy(rec + 16 + (h * 2 + p) * 32 + 8 * k, qs + 8 * p, 8);
          }
        }
      }
    }
  }
}

void MatMulRowsInt8Packed(const WeightTensor& w, const uint8_t* packed, const ActBlockQ8* xq, int m,
                          float* out, int64_t out_stride, int64_t row_begin, int64_t row_end) {
#if CHORUS_INT8_PACKED
  if (w.type == GgmlType::kQ8_0) {
    MatMulPacked<GgmlType::kQ8_0>(w, packed, xq, m, out, out_stride, row_begin, row_end);
  } else {
    MatMulPacked<GgmlType::kQ4_0>(w, packed, xq, m, out, out_stride, row_begin, row_end);
  }
#else
  (void)w, (void)packed, (void)xq, (void)m, (void)out, (void)out_stride, (void)row_begin,
      (void)row_end;
#endif
}

}  // namespace chorus::cpu
