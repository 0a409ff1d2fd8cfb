// The CPU backend: multi-threaded (ThreadPool) SIMD kernels over host memory. It is a real
// serving backend and the oracle the CUDA backend is checked against. Weights stay in the GGUF
// mapping (zero copy). Not thread-safe: one engine thread drives it.
#pragma once

#include <memory>

#include "chorus/backends/backend.h"

namespace chorus {

std::unique_ptr<Backend> CreateCpuBackend(int num_threads);

namespace cpu {
// Kernels exposed for tests and benchmarks. `x` holds m input vectors of length n (row stride n);
// out[j * out_stride + r] = dot(row r of w, x[j]) for r in [row_begin, row_end).
void MatMulRows(const WeightTensor& w, const float* x, int m, float* out, int64_t out_stride,
                int64_t row_begin, int64_t row_end, float* scratch /* [4 * w.cols] */);
float DotF32(const float* a, const float* b, int64_t n);
// Fast dequantization of one row (n values) of a supported type.
void DequantizeRowFast(GgmlType type, const void* src, float* dst, int64_t n);
}  // namespace cpu

}  // namespace chorus
