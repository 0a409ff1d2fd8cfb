// CPU matmul kernels, int8 path over repacked Q8_0 / Q4_0 / Q4_K / Q6_K: 8 rows interleaved per
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
//
// Q4_K: row group g, super-block sb is a super-record at (g * nsb + sb) * 1184 bytes: d[8] and
// dmin[8] (f16, slot order), then one 144-byte record per sub-block j: sc[8] and m[8] (the 6-bit
// scale and min, u8, slot order) and the 32 nibbles of each row as Q4_0's quants. A value is
// d * sc * q - dmin * m, so a sub-block adds d * sc * dx * dot(q, xq) - dmin * m * (dx * sum(xq));
// d * sc and dmin * m are formed in float from the integers (exact), as the row kernel does.
//
// Q6_K: super-record (g * nsb + sb) * 1680 bytes: d[8] (f16, slot order), then per sub-block j a
// 208-byte record: sc[2][8] (int8: the scales of values 0-15 and 16-31, slot order), the low
// nibbles of q (0..63) as Q4_0's quants, and 64 bytes of high bit pairs: byte b of half h holds
// bits 4-5 of chunk c's byte b at bits 2c..2c+1. A sub-block adds
// d * dx * sum_h sc[h] * (dot_h(q, xq) - 32 * sum_h(xq)) (ActBlockQ8::half).
#include <immintrin.h>

#include <cassert>
#include <cstring>

#include "src/backends/cpu/cpu_int8_packed.h"
#include "src/backends/cpu/cpu_simd.h"

namespace chorus::cpu {
namespace {

constexpr int kSlotRow[8] = {0, 1, 4, 5, 2, 3, 6, 7};

constexpr int64_t RecordBytes(GgmlType type) { return 16 + (type == GgmlType::kQ8_0 ? 256 : 128); }
constexpr int64_t kSuperRecordBytes = 32 + 8 * RecordBytes(GgmlType::kQ4_K);  // Q4_K
constexpr int64_t kQ6Record = 16 + 128 + 64;                                  // Q6_K sub-block
constexpr int64_t kQ6SuperRecordBytes = 16 + 8 * kQ6Record;

// Bytes of one row group's packed super-blocks (K types) or blocks.
int64_t GroupBytes(GgmlType type, int64_t cols) {
  if (type == GgmlType::kQ4_K) return cols / kQK_K * kSuperRecordBytes;
  if (type == GgmlType::kQ6_K) return cols / kQK_K * kQ6SuperRecordBytes;
  return cols / kQK * RecordBytes(type);
}

// Record quants from 8 rows' Q4_0-style nibbles (qs[k]: byte i holds values i (low) and i + 16
// (high)): chunks p and p + 2 share a byte.
void PackNibbles(const uint8_t* const qs[8], uint8_t* quants) {
  for (int h = 0; h < 2; ++h) {
    for (int k = 0; k < 4; ++k) {
      for (int p = 0; p < 2; ++p)
        std::memcpy(quants + (h * 2 + p) * 32 + 8 * k, qs[4 * h + k] + 8 * p, 8);
    }
  }
}

#if CHORUS_INT8_PACKED
inline __m256i Dpbusd(__m256i acc, __m256i u, __m256i s) {
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
  return _mm256_dpbusd_epi32(acc, u, s);
#else
  return _mm256_dpbusd_avx_epi32(acc, u, s);
#endif
}

// A record's quants as dpbusd operands: wv[h][c] = rows 4h..4h+3, chunk c (values 8c..8c+7).
template <GgmlType kType>
inline void LoadQuants(const uint8_t* q, __m256i wv[2][4]) {
  if constexpr (kType == GgmlType::kQ8_0) {
#pragma GCC unroll 8
    for (int i = 0; i < 8; ++i)
      wv[i / 4][i % 4] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q + 32 * i));
  } else {
    const __m256i nib = _mm256_set1_epi8(0x0f);
#pragma GCC unroll 4
    for (int i = 0; i < 4; ++i) {
      const __m256i l = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q + 32 * i));
      wv[i / 2][i % 2] = _mm256_and_si256(l, nib);
      wv[i / 2][i % 2 + 2] = _mm256_and_si256(_mm256_srli_epi16(l, 4), nib);
    }
  }
}

// The 8 rows' integer dots with one activation block, as floats in slot order.
inline __m256 RecordDot(const __m256i wv[2][4], const ActBlockQ8& xb) {
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
  return _mm256_cvtepi32_ps(_mm256_hadd_epi32(s0, s1));
}

template <int kNt>
inline void StoreSlots(const __m256* acc, float* res, int64_t out_stride) {
#pragma GCC unroll 4
  for (int t = 0; t < kNt; ++t) {
    alignas(32) float lanes[8];
    _mm256_store_ps(lanes, acc[t]);
    for (int s = 0; s < 8; ++s) res[t * out_stride + kSlotRow[s]] = lanes[s];
  }
}

// One Q8_0 / Q4_0 row group against kNt activation rows; acc lane s accumulates row kSlotRow[s].
template <GgmlType kType, int kNt>
void GroupDots(const uint8_t* rec, int64_t nb, const ActBlockQ8* const* x, float* res,
               int64_t out_stride) {
  constexpr int64_t kRec = RecordBytes(kType);
  constexpr float kOffset = kType == GgmlType::kQ8_0 ? 128.0f : 8.0f;
  __m256 acc[kNt];
#pragma GCC unroll 4
  for (int t = 0; t < kNt; ++t) acc[t] = _mm256_setzero_ps();
  for (int64_t b = 0; b < nb; ++b, rec += kRec) {
    const __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(rec)));
    __m256i wv[2][4];
    LoadQuants<kType>(rec + 16, wv);
#pragma GCC unroll 4
    for (int t = 0; t < kNt; ++t) {
      const ActBlockQ8& xb = x[t][b];
      const __m256 v =
          _mm256_fmsub_ps(RecordDot(wv, xb), _mm256_set1_ps(xb.d), _mm256_set1_ps(kOffset * xb.s));
      acc[t] = _mm256_fmadd_ps(dw, v, acc[t]);
    }
  }
  StoreSlots<kNt>(acc, res, out_stride);
}

// 8 u8 lanes (slot order) as floats.
inline __m256 U8Lanes(const uint8_t* p) {
  return _mm256_cvtepi32_ps(
      _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
}

// 8 int8 lanes (slot order) as floats.
inline __m256 I8Lanes(const uint8_t* p) {
  return _mm256_cvtepi32_ps(
      _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
}

// As RecordDot, values 0-15 (chunks 0-1) and 16-31 (chunks 2-3) apart.
inline void RecordHalfDots(const __m256i wv[2][4], const ActBlockQ8& xb, __m256 dot[2]) {
#pragma GCC unroll 2
  for (int half = 0; half < 2; ++half) {
    __m256i s0 = _mm256_setzero_si256(), s1 = _mm256_setzero_si256();
#pragma GCC unroll 2
    for (int c = 2 * half; c < 2 * half + 2; ++c) {
      int64_t chunk;
      std::memcpy(&chunk, xb.qs + 8 * c, 8);
      const __m256i xc = _mm256_set1_epi64x(chunk);
      s0 = Dpbusd(s0, wv[0][c], xc);
      s1 = Dpbusd(s1, wv[1][c], xc);
    }
    dot[half] = _mm256_cvtepi32_ps(_mm256_hadd_epi32(s0, s1));
  }
}

// One Q4_K row group against kNt activation rows: per sub-block, d * sc and dmin * m as
// vectors over the 8 rows, the scaled dots in acc and the min terms in a second chain.
template <int kNt>
void GroupDotsQ4K(const uint8_t* rec, int64_t nsb, const ActBlockQ8* const* x, float* res,
                  int64_t out_stride) {
  constexpr int64_t kRec = RecordBytes(GgmlType::kQ4_K);
  __m256 acc[kNt], mins[kNt];
#pragma GCC unroll 4
  for (int t = 0; t < kNt; ++t) acc[t] = mins[t] = _mm256_setzero_ps();
  for (int64_t sb = 0; sb < nsb; ++sb, rec += kSuperRecordBytes) {
    const __m256 d = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(rec)));
    const __m256 dmin =
        _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(rec + 16)));
    const uint8_t* sub = rec + 32;
    for (int j = 0; j < 8; ++j, sub += kRec) {
      const __m256 ds = _mm256_mul_ps(d, U8Lanes(sub));
      const __m256 dm = _mm256_mul_ps(dmin, U8Lanes(sub + 8));
      __m256i wv[2][4];
      LoadQuants<GgmlType::kQ4_0>(sub + 16, wv);
#pragma GCC unroll 4
      for (int t = 0; t < kNt; ++t) {
        const ActBlockQ8& xb = x[t][sb * 8 + j];
        acc[t] =
            _mm256_fmadd_ps(ds, _mm256_mul_ps(RecordDot(wv, xb), _mm256_set1_ps(xb.d)), acc[t]);
        mins[t] = _mm256_fmadd_ps(dm, _mm256_set1_ps(xb.s), mins[t]);
      }
    }
  }
#pragma GCC unroll 4
  for (int t = 0; t < kNt; ++t) acc[t] = _mm256_sub_ps(acc[t], mins[t]);
  StoreSlots<kNt>(acc, res, out_stride);
}

// One Q6_K row group against kNt activation rows.
template <int kNt>
void GroupDotsQ6K(const uint8_t* rec, int64_t nsb, const ActBlockQ8* const* x, float* res,
                  int64_t out_stride) {
  __m256 acc[kNt];
#pragma GCC unroll 4
  for (int t = 0; t < kNt; ++t) acc[t] = _mm256_setzero_ps();
  const __m256i three = _mm256_set1_epi8(3);
  for (int64_t sb = 0; sb < nsb; ++sb, rec += kQ6SuperRecordBytes) {
    const __m256 d = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(rec)));
    const uint8_t* sub = rec + 16;
    for (int j = 0; j < 8; ++j, sub += kQ6Record) {
      const __m256 ds[2] = {_mm256_mul_ps(d, I8Lanes(sub)), _mm256_mul_ps(d, I8Lanes(sub + 8))};
      __m256i wv[2][4];
      LoadQuants<GgmlType::kQ4_0>(sub + 16, wv);
#pragma GCC unroll 2
      for (int h = 0; h < 2; ++h) {
        const __m256i hb = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(sub + 144 + 32 * h));
#pragma GCC unroll 4
        for (int c = 0; c < 4; ++c) {
          const __m256i bits = _mm256_and_si256(_mm256_srli_epi16(hb, 2 * c), three);
          wv[h][c] = _mm256_or_si256(wv[h][c], _mm256_slli_epi16(bits, 4));
        }
      }
#pragma GCC unroll 4
      for (int t = 0; t < kNt; ++t) {
        const ActBlockQ8& xb = x[t][sb * 8 + j];
        __m256 dot[2];
        RecordHalfDots(wv, xb, dot);
        const __m256 lo = _mm256_sub_ps(dot[0], _mm256_set1_ps(32.0f * xb.half[0]));
        const __m256 hi = _mm256_sub_ps(dot[1], _mm256_set1_ps(32.0f * xb.half[1]));
        const __m256 v = _mm256_fmadd_ps(ds[0], lo, _mm256_mul_ps(ds[1], hi));
        acc[t] = _mm256_fmadd_ps(v, _mm256_set1_ps(xb.d), acc[t]);
      }
    }
  }
  StoreSlots<kNt>(acc, res, out_stride);
}

template <GgmlType kType>
void MatMulPacked(const WeightTensor& w, const uint8_t* packed, const ActBlockQ8* xq, int m,
                  float* out, int64_t out_stride, int64_t row_begin, int64_t row_end) {
  const int64_t nb = w.cols / kQK;
  const int64_t group_bytes = GroupBytes(kType, w.cols);
  assert(row_begin % 8 == 0 && row_end % 8 == 0);  // a partial group would touch others' rows
  for (int64_t g = row_begin / 8; g < row_end / 8; ++g) {
    const uint8_t* rec = packed + g * group_bytes;
    ForTokenTiles(xq, nb, m, [&](auto nt, int j, const ActBlockQ8* const* x) {
      float* res = out + static_cast<int64_t>(j) * out_stride + 8 * g;
      if constexpr (kType == GgmlType::kQ4_K) {
        GroupDotsQ4K<decltype(nt)::value>(rec, w.cols / kQK_K, x, res, out_stride);
      } else if constexpr (kType == GgmlType::kQ6_K) {
        GroupDotsQ6K<decltype(nt)::value>(rec, w.cols / kQK_K, x, res, out_stride);
      } else {
        GroupDots<kType, decltype(nt)::value>(rec, nb, x, res, out_stride);
      }
    });
  }
}
#endif

}  // namespace

bool Int8PackSupported(const WeightTensor& w) {
#if CHORUS_INT8_PACKED
  if (w.type == GgmlType::kQ4_K || w.type == GgmlType::kQ6_K)
    return w.rows % 8 == 0 && w.cols % kQK_K == 0 && w.rows > 0;
  return (w.type == GgmlType::kQ8_0 || w.type == GgmlType::kQ4_0) && w.rows % 8 == 0 &&
         w.cols % kQK == 0 && w.rows > 0;
#else
  (void)w;
  return false;
#endif
}

size_t Int8PackedBytes(const WeightTensor& w) {
  return static_cast<size_t>(w.rows / 8) * static_cast<size_t>(GroupBytes(w.type, w.cols));
}

namespace {

// One Q8_0 / Q4_0 record: block b of rows 8g..8g+7.
void PackRecordQ(const WeightTensor& w, int64_t g, int64_t b, uint8_t* rec) {
  const bool q8 = w.type == GgmlType::kQ8_0;
  const int64_t block_bytes = q8 ? sizeof(BlockQ8_0) : sizeof(BlockQ4_0);
  const auto* base = static_cast<const uint8_t*>(w.data);
  const uint8_t* blk[8];
  for (int r = 0; r < 8; ++r) blk[r] = base + (8 * g + r) * w.row_bytes + b * block_bytes;
  for (int s = 0; s < 8; ++s) std::memcpy(rec + 2 * s, blk[kSlotRow[s]], 2);  // f16 scales
  if (!q8) {  // byte j of Q4_0 holds values j (low) and j + 16 (high)
    const uint8_t* qs[8];
    for (int r = 0; r < 8; ++r) qs[r] = blk[r] + 2;
    PackNibbles(qs, rec + 16);
    return;
  }
  for (int r = 0; r < 8; ++r) {  // chunk c = values 8c..8c+7, stored as q + 128
    const int h = r / 4, k = r % 4;
    for (int c = 0; c < 4; ++c) {
      uint8_t* dst = rec + 16 + (h * 4 + c) * 32 + 8 * k;
      for (int i = 0; i < 8; ++i) dst[i] = static_cast<uint8_t>(blk[r][2 + 8 * c + i] ^ 0x80);
    }
  }
}

// blk[r] = super-block sb of row 8g + r.
template <typename Block>
void GroupSuperBlocks(const WeightTensor& w, int64_t g, int64_t sb, const Block* blk[8]) {
  const auto* base = static_cast<const uint8_t*>(w.data);
  for (int r = 0; r < 8; ++r)
    blk[r] = reinterpret_cast<const Block*>(base + (8 * g + r) * w.row_bytes) + sb;
}

// One Q4_K super-record: super-block sb of rows 8g..8g+7.
void PackSuperRecordQ4K(const WeightTensor& w, int64_t g, int64_t sb, uint8_t* rec) {
  const BlockQ4_K* blk[8];
  GroupSuperBlocks(w, g, sb, blk);
  for (int s = 0; s < 8; ++s) {
    std::memcpy(rec + 2 * s, &blk[kSlotRow[s]]->d, 2);
    std::memcpy(rec + 16 + 2 * s, &blk[kSlotRow[s]]->dmin, 2);
  }
  for (int j = 0; j < 8; ++j) {
    uint8_t* sub = rec + 32 + j * RecordBytes(GgmlType::kQ4_K);
    for (int s = 0; s < 8; ++s) {
      int sc, mn;
      ScaleMinK4(j, blk[kSlotRow[s]]->scales, &sc, &mn);
      sub[s] = static_cast<uint8_t>(sc);
      sub[8 + s] = static_cast<uint8_t>(mn);
    }
    // Sub-block j is nibble half j % 2 of qs[32 * (j / 2) ..]: as Q4_0 nibbles (i, i + 16).
    uint8_t nib[8][16];
    const uint8_t* qs[8];
    for (int r = 0; r < 8; ++r) {
      const uint8_t* src = blk[r]->qs + 32 * (j / 2);
      const int shift = 4 * (j % 2);
      for (int i = 0; i < 16; ++i) {
        nib[r][i] =
            static_cast<uint8_t>(((src[i] >> shift) & 0xf) | (((src[i + 16] >> shift) & 0xf) << 4));
      }
      qs[r] = nib[r];
    }
    PackNibbles(qs, sub + 16);
  }
}

// One Q6_K super-record: super-block sb of rows 8g..8g+7.
void PackSuperRecordQ6K(const WeightTensor& w, int64_t g, int64_t sb, uint8_t* rec) {
  const BlockQ6_K* blk[8];
  GroupSuperBlocks(w, g, sb, blk);
  for (int s = 0; s < 8; ++s) std::memcpy(rec + 2 * s, &blk[kSlotRow[s]]->d, 2);
  for (int j = 0; j < 8; ++j) {  // sub-block j: values 32j..32j+31
    uint8_t* sub = rec + 16 + j * kQ6Record;
    const int half = j / 4, g4 = j % 4;
    for (int s = 0; s < 8; ++s) {
      sub[s] = static_cast<uint8_t>(blk[kSlotRow[s]]->scales[8 * half + 2 * g4]);
      sub[8 + s] = static_cast<uint8_t>(blk[kSlotRow[s]]->scales[8 * half + 2 * g4 + 1]);
    }
    uint8_t q[8][32], nib[8][16];
    const uint8_t* qs[8];
    for (int r = 0; r < 8; ++r) {
      const uint8_t* ql = blk[r]->ql + 64 * half + 32 * (g4 & 1);
      const uint8_t* qh = blk[r]->qh + 32 * half;
      for (int l = 0; l < 32; ++l)
        q[r][l] = static_cast<uint8_t>(((ql[l] >> (4 * (g4 >> 1))) & 0xf) |
                                       (((qh[l] >> (2 * g4)) & 3) << 4));
      for (int i = 0; i < 16; ++i)
        nib[r][i] = static_cast<uint8_t>((q[r][i] & 0xf) | ((q[r][i + 16] & 0xf) << 4));
      qs[r] = nib[r];
    }
    PackNibbles(qs, sub + 16);
    for (int r = 0; r < 8; ++r) {  // high bit pairs: row r = 4h + k, byte 8k + i of half h
      const int h = r / 4, k = r % 4;
      for (int i = 0; i < 8; ++i) {
        uint8_t b = 0;
        for (int c = 0; c < 4; ++c) b |= static_cast<uint8_t>((q[r][8 * c + i] >> 4) << (2 * c));
        sub[144 + 32 * h + 8 * k + i] = b;
      }
    }
  }
}

}  // namespace

void PackInt8Rows(const WeightTensor& w, int64_t group_begin, int64_t group_end, uint8_t* out) {
  if (w.type == GgmlType::kQ4_K || w.type == GgmlType::kQ6_K) {
    const int64_t nsb = w.cols / kQK_K, sb_bytes = GroupBytes(w.type, kQK_K);
    for (int64_t g = group_begin; g < group_end; ++g) {
      for (int64_t sb = 0; sb < nsb; ++sb) {
        uint8_t* rec = out + (g * nsb + sb) * sb_bytes;
        if (w.type == GgmlType::kQ4_K) {
          PackSuperRecordQ4K(w, g, sb, rec);
        } else {
          PackSuperRecordQ6K(w, g, sb, rec);
        }
      }
    }
    return;
  }
  const int64_t nb = w.cols / kQK, rec_bytes = RecordBytes(w.type);
  for (int64_t g = group_begin; g < group_end; ++g) {
    for (int64_t b = 0; b < nb; ++b) PackRecordQ(w, g, b, out + (g * nb + b) * rec_bytes);
  }
}

void MatMulRowsInt8Packed(const WeightTensor& w, const uint8_t* packed, const ActBlockQ8* xq, int m,
                          float* out, int64_t out_stride, int64_t row_begin, int64_t row_end) {
#if CHORUS_INT8_PACKED
  if (w.type == GgmlType::kQ8_0) {
    MatMulPacked<GgmlType::kQ8_0>(w, packed, xq, m, out, out_stride, row_begin, row_end);
  } else if (w.type == GgmlType::kQ4_K) {
    MatMulPacked<GgmlType::kQ4_K>(w, packed, xq, m, out, out_stride, row_begin, row_end);
  } else if (w.type == GgmlType::kQ6_K) {
    MatMulPacked<GgmlType::kQ6_K>(w, packed, xq, m, out, out_stride, row_begin, row_end);
  } else {
    MatMulPacked<GgmlType::kQ4_0>(w, packed, xq, m, out, out_stride, row_begin, row_end);
  }
#else
  (void)w, (void)packed, (void)xq, (void)m, (void)out, (void)out_stride, (void)row_begin,
      (void)row_end;
#endif
}

}  // namespace chorus::cpu
