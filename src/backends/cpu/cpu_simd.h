// SIMD helpers shared by the CPU matmul kernels (internal to the CPU backend).
#pragma once

#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "chorus/backends/cpu_backend.h"

namespace chorus::cpu {

#if defined(__AVX2__) && defined(__FMA__)
// Sum of the 8 lanes.
inline float Hsum(__m256 v) {
  __m128 lo = _mm256_castps256_ps128(v);
  __m128 hi = _mm256_extractf128_ps(v, 1);
  lo = _mm_add_ps(lo, hi);
  lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
  lo = _mm_add_ss(lo, _mm_shuffle_ps(lo, lo, 0x55));
  return _mm_cvtss_f32(lo);
}
#endif

// 6-bit scale and min of sub-block j of a Q4_K / Q5_K super-block.
inline void ScaleMinK4(int j, const uint8_t* q, int* sc, int* m) {
  if (j < 4) {
    *sc = q[j] & 63;
    *m = q[j + 4] & 63;
  } else {
    *sc = (q[j + 4] & 0xf) | ((q[j - 4] >> 6) << 4);
    *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
  }
}

// The int8 kernels take activation rows in tiles of up to 4 with the tile size as a compile-time
// constant (their accumulators stay in registers): calls f(std::integral_constant<int, nt>,
// first row j, x) with x[t] = row j + t's blocks (nb blocks per row).
template <typename TileFn>
inline void ForTokenTiles(const ActBlockQ8* xq, int64_t nb, int m, TileFn&& f) {
  for (int j = 0; j < m; j += 4) {
    const int nt = std::min(4, m - j);
    const ActBlockQ8* x[4];
    for (int t = 0; t < nt; ++t) x[t] = xq + (j + t) * nb;
    switch (nt) {
      case 1:
        f(std::integral_constant<int, 1>{}, j, x);
        break;
      case 2:
        f(std::integral_constant<int, 2>{}, j, x);
        break;
      case 3:
        f(std::integral_constant<int, 3>{}, j, x);
        break;
      default:
        f(std::integral_constant<int, 4>{}, j, x);
        break;
    }
  }
}

}  // namespace chorus::cpu
