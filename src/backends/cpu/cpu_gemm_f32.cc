// F32 outer-product matmul over 32-row panels (layout and why: cpu_gemm_f32.h).
#include "src/backends/cpu/cpu_gemm_f32.h"

#include <immintrin.h>

#include <algorithm>
#include <cassert>
#include <type_traits>

namespace chorus::cpu {
namespace {

constexpr int kP = kF32PanelRows;
constexpr int kMaxTile = 8;  // tokens per pass: 2 x 8 accumulators, 2 weight vectors

#if CHORUS_F32_PANELS
template <int kT>
void PanelTile(const float* panel, int64_t n, const float* x, int64_t x_stride, float* res,
               int64_t out_stride) {
  __m512 lo[kT], hi[kT];
#pragma GCC unroll 8
  for (int t = 0; t < kT; ++t) lo[t] = hi[t] = _mm512_setzero_ps();
  for (int64_t k = 0; k < n; ++k, panel += kP) {
    const __m512 w0 = _mm512_loadu_ps(panel), w1 = _mm512_loadu_ps(panel + 16);
#pragma GCC unroll 8
    for (int t = 0; t < kT; ++t) {
      const __m512 xv = _mm512_set1_ps(x[t * x_stride + k]);
      lo[t] = _mm512_fmadd_ps(w0, xv, lo[t]);
      hi[t] = _mm512_fmadd_ps(w1, xv, hi[t]);
    }
  }
#pragma GCC unroll 8
  for (int t = 0; t < kT; ++t) {
    _mm512_storeu_ps(res + t * out_stride, lo[t]);
    _mm512_storeu_ps(res + t * out_stride + 16, hi[t]);
  }
}

template <int kT>
void TileOf(const float* panel, int64_t n, const float* x, int64_t x_stride, float* res,
            int64_t out_stride, int nt) {
  if constexpr (kT > 1) {
    if (nt < kT) return TileOf<kT - 1>(panel, n, x, x_stride, res, out_stride, nt);
  }
  PanelTile<kT>(panel, n, x, x_stride, res, out_stride);
}
#endif

}  // namespace

bool F32PanelSupported(const WeightTensor& w) {
  return CHORUS_F32_PANELS && w.type == GgmlType::kF32 && w.rows > 0 && w.rows % kP == 0 &&
         w.row_bytes == w.cols * static_cast<int64_t>(sizeof(float));
}

size_t F32PanelBytes(const WeightTensor& w) {
  return static_cast<size_t>(w.rows) * static_cast<size_t>(w.cols) * sizeof(float);
}

void PackF32Panels(const WeightTensor& w, int64_t panel_begin, int64_t panel_end, float* out) {
  const auto* base = static_cast<const uint8_t*>(w.data);
  for (int64_t p = panel_begin; p < panel_end; ++p) {
    float* panel = out + p * kP * w.cols;
    for (int r = 0; r < kP; ++r) {
      const auto* row = reinterpret_cast<const float*>(base + (p * kP + r) * w.row_bytes);
      for (int64_t k = 0; k < w.cols; ++k) panel[k * kP + r] = row[k];
    }
  }
}

void MatMulF32Panels(const WeightTensor& w, const float* panels, const float* x, int m, float* out,
                     int64_t out_stride, int64_t row_begin, int64_t row_end) {
#if CHORUS_F32_PANELS
  assert(row_begin % kP == 0 && row_end % kP == 0);
  const int64_t n = w.cols;
  for (int64_t p = row_begin / kP; p < row_end / kP; ++p) {
    const float* panel = panels + p * kP * n;
    for (int j = 0; j < m; j += kMaxTile) {
      const int nt = std::min(kMaxTile, m - j);
      TileOf<kMaxTile>(panel, n, x + static_cast<int64_t>(j) * n, n,
                       out + static_cast<int64_t>(j) * out_stride + p * kP, out_stride, nt);
    }
  }
#else
  (void)w, (void)panels, (void)x, (void)m, (void)out, (void)out_stride, (void)row_begin,
      (void)row_end;
#endif
}

}  // namespace chorus::cpu
