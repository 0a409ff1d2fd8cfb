// Reference (scalar) dequantization of Q4_1, Q5_0, Q5_1 and the K-quants Q2_K..Q6_K (the
// quantizers are in quants.cc). The layouts are documented at the top of
// include/chorus/gguf/ggml_types.h; dequantization follows ggml's value order exactly and
// computes (d * scale) * q - (dmin * min) in float, the order ggml's reference code (and
// gguf-py) uses, so results match it bit for bit. Where an offset is added, the product is exact
// in float (f16 d: 11 significant bits, scale: 6 bits, code: 5 bits), so a fused multiply-add
// gives the same bits.
#include <cstdint>

#include "chorus/core/status.h"
#include "chorus/gguf/ggml_types.h"

namespace chorus::quants {
namespace {

// ---- unpacking helpers -----------------------------------------------------------------------

// Unpacks the 6-bit scale and min of sub-block j (0..7) of Q4_K / Q5_K.
void ScaleMinK4(const uint8_t* s, int j, int* scale, int* min) {
  if (j < 4) {
    *scale = s[j] & 63;
    *min = s[j + 4] & 63;
  } else {
    *scale = (s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4);
    *min = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
  }
}

// The 6-bit scale of Q3_K sub-block s (0..15), still offset by 32.
int ScaleK3(const uint8_t* sc, int s) {
  const int low = (sc[s % 8] >> (4 * (s / 8))) & 0xF;
  const int high = (sc[8 + s % 4] >> (2 * (s / 4))) & 3;
  return low | (high << 4);
}

uint32_t LoadU32(const uint8_t* p) {
  return p[0] | (p[1] << 8) | (p[2] << 16) | (static_cast<uint32_t>(p[3]) << 24);
}

// 5-bit codes of a 32-value block: code j from bit j of qh and nibble (j < 16 low, else high).
void Unpack5(const uint8_t* qh, const uint8_t* qs, int* q) {
  const uint32_t h = LoadU32(qh);
  for (int j = 0; j < 16; ++j) {
    q[j] = (qs[j] & 0xF) | (((h >> j) & 1) << 4);
    q[j + 16] = (qs[j] >> 4) | (((h >> (j + 16)) & 1) << 4);
  }
}

}  // namespace

// ---- 32-value blocks -------------------------------------------------------------------------

void DequantizeQ4_1(const BlockQ4_1* src, float* dst, int64_t n) {
  CHORUS_CHECK(n % kQK == 0);
  for (int64_t b = 0; b < n / kQK; ++b, dst += kQK) {
    const float d = HalfToFloat(src[b].d), m = HalfToFloat(src[b].m);
    for (int j = 0; j < 16; ++j) {
      dst[j] = d * (src[b].qs[j] & 0xF) + m;
      dst[j + 16] = d * (src[b].qs[j] >> 4) + m;
    }
  }
}

void DequantizeQ5_0(const BlockQ5_0* src, float* dst, int64_t n) {
  CHORUS_CHECK(n % kQK == 0);
  int q[32];
  for (int64_t b = 0; b < n / kQK; ++b, dst += kQK) {
    const float d = HalfToFloat(src[b].d);
    Unpack5(src[b].qh, src[b].qs, q);
    for (int j = 0; j < 32; ++j) dst[j] = d * static_cast<float>(q[j] - 16);
  }
}

void DequantizeQ5_1(const BlockQ5_1* src, float* dst, int64_t n) {
  CHORUS_CHECK(n % kQK == 0);
  int q[32];
  for (int64_t b = 0; b < n / kQK; ++b, dst += kQK) {
    const float d = HalfToFloat(src[b].d), m = HalfToFloat(src[b].m);
    Unpack5(src[b].qh, src[b].qs, q);
    for (int j = 0; j < 32; ++j) dst[j] = d * static_cast<float>(q[j]) + m;
  }
}

// ---- K-quants: dequantization ----------------------------------------------------------------

void DequantizeQ2_K(const BlockQ2_K* src, float* dst, int64_t n) {
  CHORUS_CHECK(n % kQK_K == 0);
  for (int64_t b = 0; b < n / kQK_K; ++b, dst += kQK_K) {
    const BlockQ2_K& blk = src[b];
    const float d = HalfToFloat(blk.d), dmin = HalfToFloat(blk.dmin);
    for (int i = 0; i < kQK_K; ++i) {  // i = 128h + 32k + l
      const int h = i / 128, k = (i / 32) % 4, l = i % 32;
      const int q = (blk.qs[32 * h + l] >> (2 * k)) & 3;
      const uint8_t s = blk.scales[i / 16];
      dst[i] = (d * (s & 0xF)) * q - dmin * (s >> 4);
    }
  }
}

void DequantizeQ3_K(const BlockQ3_K* src, float* dst, int64_t n) {
  CHORUS_CHECK(n % kQK_K == 0);
  for (int64_t b = 0; b < n / kQK_K; ++b, dst += kQK_K) {
    const BlockQ3_K& blk = src[b];
    const float d = HalfToFloat(blk.d);
    for (int i = 0; i < kQK_K; ++i) {
      const int h = i / 128, k = (i / 32) % 4, l = i % 32;
      const int low = (blk.qs[32 * h + l] >> (2 * k)) & 3;
      const bool high = (blk.hmask[l] >> (4 * h + k)) & 1;
      const int q = low - (high ? 0 : 4);
      dst[i] = (d * static_cast<float>(ScaleK3(blk.scales, i / 16) - 32)) * q;
    }
  }
}

void DequantizeQ4_K(const BlockQ4_K* src, float* dst, int64_t n) {
  CHORUS_CHECK(n % kQK_K == 0);
  for (int64_t b = 0; b < n / kQK_K; ++b, dst += kQK_K) {
    const BlockQ4_K& blk = src[b];
    const float d = HalfToFloat(blk.d), dmin = HalfToFloat(blk.dmin);
    for (int j = 0; j < 8; ++j) {  // sub-block j: nibble j % 2 of qs[32 * (j / 2) + l]
      int sc, m;
      ScaleMinK4(blk.scales, j, &sc, &m);
      const float ds = d * sc, dm = dmin * m;
      const uint8_t* qs = blk.qs + 32 * (j / 2);
      for (int l = 0; l < 32; ++l) dst[32 * j + l] = ds * ((qs[l] >> (4 * (j % 2))) & 0xF) - dm;
    }
  }
}

void DequantizeQ5_K(const BlockQ5_K* src, float* dst, int64_t n) {
  CHORUS_CHECK(n % kQK_K == 0);
  for (int64_t b = 0; b < n / kQK_K; ++b, dst += kQK_K) {
    const BlockQ5_K& blk = src[b];
    const float d = HalfToFloat(blk.d), dmin = HalfToFloat(blk.dmin);
    for (int j = 0; j < 8; ++j) {  // as Q4_K, bit 4 from bit j of qh[l]
      int sc, m;
      ScaleMinK4(blk.scales, j, &sc, &m);
      const float ds = d * sc, dm = dmin * m;
      const uint8_t* qs = blk.qs + 32 * (j / 2);
      for (int l = 0; l < 32; ++l) {
        const int q = ((qs[l] >> (4 * (j % 2))) & 0xF) | (((blk.qh[l] >> j) & 1) << 4);
        dst[32 * j + l] = ds * q - dm;
      }
    }
  }
}

void DequantizeQ6_K(const BlockQ6_K* src, float* dst, int64_t n) {
  CHORUS_CHECK(n % kQK_K == 0);
  for (int64_t b = 0; b < n / kQK_K; ++b, dst += kQK_K) {
    const BlockQ6_K& blk = src[b];
    const float d = HalfToFloat(blk.d);
    for (int i = 0; i < kQK_K; ++i) {  // i = 128h + 32k + l
      const int h = i / 128, k = (i / 32) % 4, l = i % 32;
      const int low = (blk.ql[64 * h + 32 * (k % 2) + l] >> (4 * (k / 2))) & 0xF;
      const int high = (blk.qh[32 * h + l] >> (2 * k)) & 3;
      dst[i] = (d * blk.scales[i / 16]) * static_cast<float>((low | (high << 4)) - 32);
    }
  }
}

}  // namespace chorus::quants
