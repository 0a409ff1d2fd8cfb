// The CPU backend: multi-threaded (ThreadPool) SIMD kernels over host memory. It is a real
// serving backend and the oracle the CUDA backend is checked against. Weights stay in the GGUF
// mapping (zero copy), except the packed copies the int8 path makes of Q8_0/Q4_0 matrices.
// Not thread-safe: one engine thread drives it.
#pragma once

#include <memory>

#include "chorus/backends/backend.h"

namespace chorus {

std::unique_ptr<Backend> CreateCpuBackend(int num_threads);
// int8_activations: matmuls with quantized weights (Q8_0, Q4_0, Q4_K, Q5_K, Q6_K) round each
// 32-value block of the activations to int8 (scale per block) and use integer dot products, 2-4x
// faster than dequantize-then-FMA with logits within ~0.4% of the largest (docs/PERFORMANCE.md);
// Q8_0/Q4_0/Q4_K/Q6_K matrices get a 16-row packed copy on first use (cpu_int8_packed.h), and F32
// matrices a 32-row panel copy for matmuls of several tokens (cpu_gemm_f32.h), unless
// packed_weights is false (the row kernels then read the weights in place: less memory, slower;
// chorus-bench-model --no-pack compares the two). The server's default (cpu_int8_activations);
// the one-argument overload is the exact path, the oracle.
std::unique_ptr<Backend> CreateCpuBackend(int num_threads, bool int8_activations,
                                          bool packed_weights = true);

namespace cpu {
// Kernels exposed for tests and benchmarks. `x` holds m input vectors of length n (row stride n);
// out[j * out_stride + r] = dot(row r of w, x[j]) for r in [row_begin, row_end).
void MatMulRows(const WeightTensor& w, const float* x, int m, float* out, int64_t out_stride,
                int64_t row_begin, int64_t row_end, float* scratch /* [4 * w.cols] */);
float DotF32(const float* a, const float* b, int64_t n);
// Activations as int8 blocks: x ~= d * qs[i] for each 32 values; s = d * sum(qs) (the block
// sum, for the K-quants' per-sub-block minimum); hs[h] = d * sum of qs[16h..16h+15] (the packed
// Q6_K kernel's offset, per 16-value scale).
struct ActBlockQ8 {
  float d;
  float s;
  int8_t qs[32];
  float hs[2];
};
void QuantizeActivations(const float* x, int64_t n, ActBlockQ8* out);
// out[j * out_stride + r] = dot(row r of w, x[j]) with integer block dots (w: Q8_0, Q4_0 or,
// with AVX2, Q4_K / Q5_K / Q6_K (Int8Supported); xq: m rows of w.cols / 32 blocks).
bool Int8Supported(GgmlType type);
void MatMulRowsInt8(const WeightTensor& w, const ActBlockQ8* xq, int m, float* out,
                    int64_t out_stride, int64_t row_begin, int64_t row_end);
// Fast dequantization of one row (n values) of a supported type.
void DequantizeRowFast(GgmlType type, const void* src, float* dst, int64_t n);
}  // namespace cpu

}  // namespace chorus
