// The int8 path over repacked Q8_0 / Q4_0 / Q4_K / Q6_K weights (cpu_matmul_packed.cc; layout
// there): built where the CPU has VNNI dot products (AVX512-VNNI with VL, or AVX-VNNI). The CPU
// backend repacks such weights once at load when int8 activations are on, and keeps the original
// layout for embedding lookups.
#pragma once

#include <cstddef>
#include <cstdint>

#include "chorus/backends/cpu_backend.h"

#if ((defined(__AVX512VNNI__) && defined(__AVX512VL__)) || defined(__AVXVNNI__)) && \
    defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#define CHORUS_INT8_PACKED 1
#else
#define CHORUS_INT8_PACKED 0
#endif

namespace chorus::cpu {

// True when this build can run w from the packed layout: Q8_0, Q4_0, Q4_K or Q6_K, rows a
// multiple of 8.
bool Int8PackSupported(const WeightTensor& w);
// Bytes of the packed copy of w (Q8_0 / Q4_0 / Q6_K: the same as w's own; Q4_K: 148 per 144).
size_t Int8PackedBytes(const WeightTensor& w);
// Packs row groups [group_begin, group_end) (8 rows each) of w into out (Int8PackedBytes(w)).
void PackInt8Rows(const WeightTensor& w, int64_t group_begin, int64_t group_end, uint8_t* out);
// out[j * out_stride + r] = dot(row r of w, xq row j) for r in [row_begin, row_end), both
// multiples of 8, from the packed copy.
void MatMulRowsInt8Packed(const WeightTensor& w, const uint8_t* packed, const ActBlockQ8* xq, int m,
                          float* out, int64_t out_stride, int64_t row_begin, int64_t row_end);

}  // namespace chorus::cpu
