// Reference (scalar) quantizers for Q4_1, Q5_0, Q5_1 and the K-quants Q2_K..Q6_K (their
// dequantization is in dequantize.cc; the layouts are documented at the top of
// include/chorus/gguf/ggml_types.h).
//
// Quantizers: round to nearest with a small least-squares scale search. Every group of values
// that shares a scale (a Q4_1/Q5_* block, a K-quant sub-block) is fitted on its own: for ~20
// candidate scales around the full-range one ((max - min) / nmax, or for signed formats the
// value of largest magnitude over -nneg, which maps it to the most negative code) the values
// are rounded to codes, the scale (and offset) refitted to those codes by least squares, and
// the candidate whose re-rounded codes give the least squared error kept. K-quants then store
// the sub-block scales (and mins) as small integers relative to the super-block's f16 d (and
// dmin) (6 bits for Q3_K/Q4_K/Q5_K, 4 bits for Q2_K, int8 for Q6_K) and the values are
// re-rounded with the scales actually stored. Formats whose mins are unsigned (the K-quants)
// fit an offset <= 0. All-zero input gives zero scales and codes that decode to exactly 0.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "chorus/core/status.h"
#include "chorus/gguf/ggml_types.h"

namespace chorus::quants {
namespace {

constexpr int kCandidates = 20;  // scale candidates tried per sub-block

float RoundToHalf(float x) { return HalfToFloat(FloatToHalf(x)); }

int RoundClamp(float x, int lo, int hi) {
  if (!(x > lo)) return lo;  // also NaN
  if (x >= hi) return hi;
  return static_cast<int>(std::lround(x));
}

// ---- fits ------------------------------------------------------------------------------------

// x ~= scale * q + offset with q in [0, nmax].
struct Affine {
  float scale = 0;
  float offset = 0;
};

float AffineError(const float* x, int n, int nmax, Affine a) {
  const float inv = a.scale != 0 ? 1.0f / a.scale : 0.0f;
  float err = 0;
  for (int i = 0; i < n; ++i) {
    const int q = RoundClamp((x[i] - a.offset) * inv, 0, nmax);
    const float e = a.scale * q + a.offset - x[i];
    err += e * e;
  }
  return err;
}

// Least-squares (scale, offset) for the codes that `guess` gives; offset kept <= 0 when asked.
Affine RefitAffine(const float* x, int n, int nmax, Affine guess, bool offset_nonpositive) {
  const float inv = guess.scale != 0 ? 1.0f / guess.scale : 0.0f;
  double sq = 0, sqq = 0, sx = 0, sqx = 0;
  for (int i = 0; i < n; ++i) {
    const int q = RoundClamp((x[i] - guess.offset) * inv, 0, nmax);
    sq += q;
    sqq += static_cast<double>(q) * q;
    sx += x[i];
    sqx += q * static_cast<double>(x[i]);
  }
  const double det = n * sqq - sq * sq;
  if (det <= 0) return guess;  // all codes equal
  Affine a{static_cast<float>((n * sqx - sq * sx) / det),
           static_cast<float>((sqq * sx - sq * sqx) / det)};
  if (offset_nonpositive && a.offset > 0) a = {static_cast<float>(sqx / sqq), 0.0f};
  if (a.scale < 0) return guess;
  return a;
}

Affine FitAffine(const float* x, int n, int nmax, bool offset_nonpositive) {
  float lo = *std::min_element(x, x + n);
  const float hi = *std::max_element(x, x + n);
  if (offset_nonpositive) lo = std::min(lo, 0.0f);
  if (!(hi > lo)) return {0.0f, lo};
  Affine best{(hi - lo) / nmax, lo};
  float best_err = AffineError(x, n, nmax, best);
  for (int k = 0; k < kCandidates; ++k) {
    const Affine guess{(hi - lo) / (nmax + 0.1f * (k - 5)), lo};
    const Affine a = RefitAffine(x, n, nmax, guess, offset_nonpositive);
    const float err = AffineError(x, n, nmax, a);
    if (err < best_err) {
      best_err = err;
      best = a;
    }
  }
  return best;
}

// x ~= scale * q with q in [-nneg, nneg - 1]; the scale is signed.
float SymmetricError(const float* x, int n, int nneg, float scale) {
  const float inv = scale != 0 ? 1.0f / scale : 0.0f;
  float err = 0;
  for (int i = 0; i < n; ++i) {
    const float e = scale * RoundClamp(x[i] * inv, -nneg, nneg - 1) - x[i];
    err += e * e;
  }
  return err;
}

float FitSymmetric(const float* x, int n, int nneg) {
  float vmax = 0;  // signed value of largest magnitude
  for (int i = 0; i < n; ++i) {
    if (std::fabs(x[i]) > std::fabs(vmax)) vmax = x[i];
  }
  if (vmax == 0) return 0.0f;
  float best = vmax / -nneg;
  float best_err = SymmetricError(x, n, nneg, best);
  for (int k = 0; k < kCandidates; ++k) {
    const float inv = -(nneg + 0.1f * (k - 10)) / vmax;
    double sqq = 0, sqx = 0;
    for (int i = 0; i < n; ++i) {
      const int q = RoundClamp(x[i] * inv, -nneg, nneg - 1);
      sqq += static_cast<double>(q) * q;
      sqx += q * static_cast<double>(x[i]);
    }
    if (sqq == 0) continue;
    const float scale = static_cast<float>(sqx / sqq);
    const float err = SymmetricError(x, n, nneg, scale);
    if (err < best_err) {
      best_err = err;
      best = scale;
    }
  }
  return best;
}

// Integer sub-block scale relative to the super-block scale d (0 when d is 0).
int ScaleCode(float value, float d, int lo, int hi) {
  return d != 0 ? RoundClamp(value / d, lo, hi) : 0;
}

// Codes for values x with the stored step and offset (x ~= step * q + offset).
void Codes(const float* x, int n, float step, float offset, int lo, int hi, uint8_t* q) {
  const float inv = step != 0 ? 1.0f / step : 0.0f;
  for (int i = 0; i < n; ++i)
    q[i] = static_cast<uint8_t>(RoundClamp((x[i] - offset) * inv, lo, hi) - lo);
}

// ---- packing helpers -------------------------------------------------------------------------

void PackScaleMinK4(const int* scale, const int* min, uint8_t* s) {
  for (int j = 0; j < 4; ++j) {
    s[j] = static_cast<uint8_t>((scale[j] & 63) | ((scale[j + 4] >> 4) << 6));
    s[j + 4] = static_cast<uint8_t>((min[j] & 63) | ((min[j + 4] >> 4) << 6));
    s[j + 8] = static_cast<uint8_t>((scale[j + 4] & 0xF) | ((min[j + 4] & 0xF) << 4));
  }
}

void PackScalesK3(const int* code, uint8_t* sc) {  // code[s] in 0..63
  std::memset(sc, 0, kKScaleBytes);
  for (int s = 0; s < 16; ++s) {
    sc[s % 8] |= static_cast<uint8_t>((code[s] & 0xF) << (4 * (s / 8)));
    sc[8 + s % 4] |= static_cast<uint8_t>((code[s] >> 4) << (2 * (s / 4)));
  }
}

void Pack5(const uint8_t* q, uint8_t* qh, uint8_t* qs) {
  uint32_t h = 0;
  for (int j = 0; j < 32; ++j) h |= static_cast<uint32_t>(q[j] >> 4) << j;
  for (int b = 0; b < 4; ++b) qh[b] = static_cast<uint8_t>(h >> (8 * b));
  for (int j = 0; j < 16; ++j)
    qs[j] = static_cast<uint8_t>((q[j] & 0xF) | ((q[j + 16] & 0xF) << 4));
}

// Fits the eight 32-value sub-blocks of a Q4_K / Q5_K super-block with codes 0..nmax and writes
// d, dmin, the packed scales and the codes q[256] (re-rounded with the stored scales).
void QuantizeSuperK45(const float* x, int nmax, uint16_t* d_out, uint16_t* dmin_out,
                      uint8_t* scales, uint8_t* q) {
  Affine fit[8];
  float max_scale = 0, max_min = 0;
  for (int j = 0; j < 8; ++j) {
    fit[j] = FitAffine(x + 32 * j, 32, nmax, /*offset_nonpositive=*/true);
    max_scale = std::max(max_scale, fit[j].scale);
    max_min = std::max(max_min, -fit[j].offset);
  }
  const float d = RoundToHalf(max_scale / 63);
  const float dmin = RoundToHalf(max_min / 63);
  int sc[8], mn[8];
  for (int j = 0; j < 8; ++j) {
    sc[j] = ScaleCode(fit[j].scale, d, 0, 63);
    mn[j] = ScaleCode(-fit[j].offset, dmin, 0, 63);
    Codes(x + 32 * j, 32, d * sc[j], -(dmin * mn[j]), 0, nmax, q + 32 * j);
  }
  *d_out = FloatToHalf(d);
  *dmin_out = FloatToHalf(dmin);
  PackScaleMinK4(sc, mn, scales);
}

}  // namespace

// ---- 32-value blocks -------------------------------------------------------------------------

int64_t QuantizeQ4_1(const float* src, BlockQ4_1* dst, int64_t n) {
  CHORUS_CHECK(n % kQK == 0);
  uint8_t q[32];
  for (int64_t b = 0; b < n / kQK; ++b, src += kQK) {
    const Affine a = FitAffine(src, 32, 15, /*offset_nonpositive=*/false);
    const float d = RoundToHalf(a.scale), m = RoundToHalf(a.offset);
    Codes(src, 32, d, m, 0, 15, q);
    dst[b].d = FloatToHalf(d);
    dst[b].m = FloatToHalf(m);
    for (int j = 0; j < 16; ++j) dst[b].qs[j] = static_cast<uint8_t>(q[j] | (q[j + 16] << 4));
  }
  return n / kQK * static_cast<int64_t>(sizeof(BlockQ4_1));
}

int64_t QuantizeQ5_0(const float* src, BlockQ5_0* dst, int64_t n) {
  CHORUS_CHECK(n % kQK == 0);
  uint8_t q[32];
  for (int64_t b = 0; b < n / kQK; ++b, src += kQK) {
    const float d = RoundToHalf(FitSymmetric(src, 32, 16));
    Codes(src, 32, d, 0.0f, -16, 15, q);  // codes stored as q + 16
    dst[b].d = FloatToHalf(d);
    Pack5(q, dst[b].qh, dst[b].qs);
  }
  return n / kQK * static_cast<int64_t>(sizeof(BlockQ5_0));
}

int64_t QuantizeQ5_1(const float* src, BlockQ5_1* dst, int64_t n) {
  CHORUS_CHECK(n % kQK == 0);
  uint8_t q[32];
  for (int64_t b = 0; b < n / kQK; ++b, src += kQK) {
    const Affine a = FitAffine(src, 32, 31, /*offset_nonpositive=*/false);
    const float d = RoundToHalf(a.scale), m = RoundToHalf(a.offset);
    Codes(src, 32, d, m, 0, 31, q);
    dst[b].d = FloatToHalf(d);
    dst[b].m = FloatToHalf(m);
    Pack5(q, dst[b].qh, dst[b].qs);
  }
  return n / kQK * static_cast<int64_t>(sizeof(BlockQ5_1));
}

// ---- K-quants: quantization ------------------------------------------------------------------

int64_t QuantizeQ2_K(const float* src, BlockQ2_K* dst, int64_t n) {
  CHORUS_CHECK(n % kQK_K == 0);
  uint8_t q[kQK_K];
  for (int64_t b = 0; b < n / kQK_K; ++b, src += kQK_K) {
    Affine fit[16];
    float max_scale = 0, max_min = 0;
    for (int s = 0; s < 16; ++s) {
      fit[s] = FitAffine(src + 16 * s, 16, 3, /*offset_nonpositive=*/true);
      max_scale = std::max(max_scale, fit[s].scale);
      max_min = std::max(max_min, -fit[s].offset);
    }
    const float d = RoundToHalf(max_scale / 15), dmin = RoundToHalf(max_min / 15);
    for (int s = 0; s < 16; ++s) {
      const int sc = ScaleCode(fit[s].scale, d, 0, 15);
      const int mn = ScaleCode(-fit[s].offset, dmin, 0, 15);
      dst[b].scales[s] = static_cast<uint8_t>(sc | (mn << 4));
      Codes(src + 16 * s, 16, d * sc, -(dmin * mn), 0, 3, q + 16 * s);
    }
    dst[b].d = FloatToHalf(d);
    dst[b].dmin = FloatToHalf(dmin);
    std::memset(dst[b].qs, 0, sizeof(dst[b].qs));
    for (int i = 0; i < kQK_K; ++i) {
      dst[b].qs[32 * (i / 128) + i % 32] |= static_cast<uint8_t>(q[i] << (2 * ((i / 32) % 4)));
    }
  }
  return n / kQK_K * static_cast<int64_t>(sizeof(BlockQ2_K));
}

int64_t QuantizeQ3_K(const float* src, BlockQ3_K* dst, int64_t n) {
  CHORUS_CHECK(n % kQK_K == 0);
  uint8_t q[kQK_K];  // code + 4, 0..7
  for (int64_t b = 0; b < n / kQK_K; ++b, src += kQK_K) {
    float scale[16], max_abs = 0;
    for (int s = 0; s < 16; ++s) {
      scale[s] = FitSymmetric(src + 16 * s, 16, 4);
      max_abs = std::max(max_abs, std::fabs(scale[s]));
    }
    const float d = RoundToHalf(max_abs / 31);
    int code[16];
    for (int s = 0; s < 16; ++s) {
      const int sc = ScaleCode(scale[s], d, -32, 31);
      code[s] = sc + 32;
      Codes(src + 16 * s, 16, d * sc, 0.0f, -4, 3, q + 16 * s);
    }
    dst[b].d = FloatToHalf(d);
    PackScalesK3(code, dst[b].scales);
    std::memset(dst[b].qs, 0, sizeof(dst[b].qs));
    std::memset(dst[b].hmask, 0, sizeof(dst[b].hmask));
    for (int i = 0; i < kQK_K; ++i) {
      const int h = i / 128, k = (i / 32) % 4, l = i % 32;
      dst[b].qs[32 * h + l] |= static_cast<uint8_t>((q[i] & 3) << (2 * k));
      dst[b].hmask[l] |= static_cast<uint8_t>((q[i] >> 2) << (4 * h + k));
    }
  }
  return n / kQK_K * static_cast<int64_t>(sizeof(BlockQ3_K));
}

int64_t QuantizeQ4_K(const float* src, BlockQ4_K* dst, int64_t n) {
  CHORUS_CHECK(n % kQK_K == 0);
  uint8_t q[kQK_K];
  for (int64_t b = 0; b < n / kQK_K; ++b, src += kQK_K) {
    QuantizeSuperK45(src, 15, &dst[b].d, &dst[b].dmin, dst[b].scales, q);
    for (int c = 0; c < 4; ++c) {
      for (int l = 0; l < 32; ++l) {
        dst[b].qs[32 * c + l] = static_cast<uint8_t>(q[64 * c + l] | (q[64 * c + 32 + l] << 4));
      }
    }
  }
  return n / kQK_K * static_cast<int64_t>(sizeof(BlockQ4_K));
}

int64_t QuantizeQ5_K(const float* src, BlockQ5_K* dst, int64_t n) {
  CHORUS_CHECK(n % kQK_K == 0);
  uint8_t q[kQK_K];
  for (int64_t b = 0; b < n / kQK_K; ++b, src += kQK_K) {
    QuantizeSuperK45(src, 31, &dst[b].d, &dst[b].dmin, dst[b].scales, q);
    std::memset(dst[b].qh, 0, sizeof(dst[b].qh));
    for (int c = 0; c < 4; ++c) {
      for (int l = 0; l < 32; ++l) {
        const int lo = q[64 * c + l], hi = q[64 * c + 32 + l];
        dst[b].qs[32 * c + l] = static_cast<uint8_t>((lo & 0xF) | ((hi & 0xF) << 4));
        dst[b].qh[l] |= static_cast<uint8_t>(((lo >> 4) << (2 * c)) | ((hi >> 4) << (2 * c + 1)));
      }
    }
  }
  return n / kQK_K * static_cast<int64_t>(sizeof(BlockQ5_K));
}

int64_t QuantizeQ6_K(const float* src, BlockQ6_K* dst, int64_t n) {
  CHORUS_CHECK(n % kQK_K == 0);
  uint8_t q[kQK_K];  // code + 32, 0..63
  for (int64_t b = 0; b < n / kQK_K; ++b, src += kQK_K) {
    float scale[16], max_abs = 0;
    for (int s = 0; s < 16; ++s) {
      scale[s] = FitSymmetric(src + 16 * s, 16, 32);
      max_abs = std::max(max_abs, std::fabs(scale[s]));
    }
    const float d = RoundToHalf(max_abs / 127);
    for (int s = 0; s < 16; ++s) {
      const int sc = ScaleCode(scale[s], d, -128, 127);
      dst[b].scales[s] = static_cast<int8_t>(sc);
      Codes(src + 16 * s, 16, d * sc, 0.0f, -32, 31, q + 16 * s);
    }
    dst[b].d = FloatToHalf(d);
    std::memset(dst[b].ql, 0, sizeof(dst[b].ql));
    std::memset(dst[b].qh, 0, sizeof(dst[b].qh));
    for (int i = 0; i < kQK_K; ++i) {  // i = 128h + 32k + l
      const int h = i / 128, k = (i / 32) % 4, l = i % 32;
      dst[b].ql[64 * h + 32 * (k % 2) + l] |= static_cast<uint8_t>((q[i] & 0xF) << (4 * (k / 2)));
      dst[b].qh[32 * h + l] |= static_cast<uint8_t>((q[i] >> 4) << (2 * k));
    }
  }
  return n / kQK_K * static_cast<int64_t>(sizeof(BlockQ6_K));
}

}  // namespace chorus::quants
