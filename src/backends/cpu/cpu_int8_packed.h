// The int8 path over repacked Q8_0 / Q4_0 / Q4_K / Q6_K weights: 16 rows interleaved per
// 32-value block so that one 512-bit VNNI dot product (vpdpbusd) serves 16 rows x 4 values with
// the activations' 4 bytes broadcast from memory, and a block's 16 row sums come out in one
// register with no horizontal add. Built where the CPU has AVX512-VNNI (and AVX512BW); elsewhere
// the row kernels (cpu_matmul_int8.cc) run from the GGUF layout. The CPU backend repacks such
// weights on a matrix's first matmul when int8 activations are on, and keeps the original
// layout for embedding lookups.
//
// Layout (cpu_pack.cc writes it, cpu_matmul_packed.cc reads it): row group g = rows 16g..16g+15.
// Quants of a 32-value block for the 16 rows are 8 chunks of 64 bytes, chunk c = values
// 4c..4c+3, row r's 4 values at byte 4r, all unsigned:
//   Q8_0  record per block: scales[16] f16, then the 8 chunks of q + 128 (544 bytes).
//   Q4_0  record per block: scales[16] f16, then 4 "pairs" of 64 bytes: pair p, byte 4r + i is
//         the row's Q4_0 byte 4p + i (low nibble: chunk p, high nibble: chunk p + 4) (288 bytes).
//   Q4_K  super-record per super-block: d[16], dmin[16] (f16); then per sub-block j: sc[16],
//         m[16] (the 6-bit scale and min as u8) and the sub-block's nibbles as Q4_0 pairs
//         (64 + 8 x 288 = 2368 bytes; 148 per row for Q4_K's 144).
//   Q6_K  super-record: d[16] (f16); then per sub-block j: sc[2][16] (int8: the scales of values
//         0-15 and 16-31), the low nibbles of q (0..63) as Q4_0 pairs, and 2 x 64 bytes of high
//         bit pairs: half h, byte 4r + i, bits 2k..2k+1 = bits 4-5 of chunk 4h + k's byte
//         (32 + 8 x 416 = 3360 bytes, Q6_K's own size).
// The weights are unsigned (Q8_0 + 128, Q4_0 + 8, Q6_K + 32 offsets, Q4_K's minimum), so each
// offset comes back out against the activation block's sums (ActBlockQ8::s and ::hs).
#pragma once

#include <cstddef>
#include <cstdint>

#include "chorus/backends/cpu_backend.h"

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VNNI__)
#define CHORUS_INT8_PACKED 1
#else
#define CHORUS_INT8_PACKED 0
#endif

namespace chorus::cpu {

inline constexpr int kPackRows = 16;  // rows per packed group

// Bytes of one packed row group of a matrix of `cols` columns (0 for an unpacked type).
int64_t PackedGroupBytes(GgmlType type, int64_t cols);
// True when this build can run w from the packed layout: Q8_0, Q4_0, Q4_K or Q6_K, rows a
// multiple of kPackRows.
bool Int8PackSupported(const WeightTensor& w);
// Bytes of the packed copy of w (Q8_0 / Q4_0 / Q6_K: the same as w's own; Q4_K: 148 per 144).
size_t Int8PackedBytes(const WeightTensor& w);
// Packs row groups [group_begin, group_end) (kPackRows rows each) of w into out
// (Int8PackedBytes(w)).
void PackInt8Rows(const WeightTensor& w, int64_t group_begin, int64_t group_end, uint8_t* out);
// out[j * out_stride + r] = dot(row r of w, xq row j) for r in [row_begin, row_end), both
// multiples of kPackRows, from the packed copy.
void MatMulRowsInt8Packed(const WeightTensor& w, const uint8_t* packed, const ActBlockQ8* xq, int m,
                          float* out, int64_t out_stride, int64_t row_begin, int64_t row_end);

}  // namespace chorus::cpu
