// F32 matmul for several tokens (prefill, batched decode) over a packed copy: panels of 32 rows
// stored column by column (panel p, column k: rows 32p..32p+31 as 32 consecutive floats), so the
// kernel is an outer product: per column, two 16-float weight loads and one broadcast activation
// per token feed two FMAs each, with 2 x (up to 8) accumulators in registers and no horizontal
// sums (the row-tiled dot-product kernel in cpu_matmul.cc reduces 16 accumulators per tile and
// reads its activation rows once per 4 weight rows). Built with AVX-512; one-token matmuls keep
// the row kernel, which streams the original rows at memory speed.
#pragma once

#include <cstddef>
#include <cstdint>

#include "chorus/backends/cpu_backend.h"

#if defined(__AVX512F__)
#define CHORUS_F32_PANELS 1
#else
#define CHORUS_F32_PANELS 0
#endif

namespace chorus::cpu {

inline constexpr int kF32PanelRows = 32;

// True when this build can run w from panels: F32, rows a multiple of kF32PanelRows.
bool F32PanelSupported(const WeightTensor& w);
// Bytes of the panel copy (the same as w's own).
size_t F32PanelBytes(const WeightTensor& w);
// Packs panels [panel_begin, panel_end) of w into out (F32PanelBytes(w) bytes).
void PackF32Panels(const WeightTensor& w, int64_t panel_begin, int64_t panel_end, float* out);
// out[j * out_stride + r] = dot(row r of w, x[j]) for r in [row_begin, row_end) (multiples of
// kF32PanelRows) and j < m, from the panel copy.
void MatMulF32Panels(const WeightTensor& w, const float* panels, const float* x, int m, float* out,
                     int64_t out_stride, int64_t row_begin, int64_t row_end);

}  // namespace chorus::cpu
