// Gate and up projections of a decode step in one GEMV, SwiGLU applied on the way out (the
// loaders and row loop of gemv_tile.cuh; no split: the FFN's 8192+ rows fill the device).
#include "gemv_tile.cuh"

namespace chorus::kernels {
namespace {

using namespace gemv;  // NOLINT: the shared GEMV helpers

// Gate and up projections with SwiGLU in the epilogue: a warp computes rows r0 .. r0 + kRows - 1
// of both weights for all tokens, then writes up and silu(gate) * up (into gate's output).
template <int kType, int kRows, int kTokens>
__global__ void GemvSwiGluKernel(DeviceWeight wg, DeviceWeight wu, const float* x, int n,
                                 float* out_gate, float* out_up) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t r0 = (static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + warp) * kRows;
  if (r0 >= wg.rows) return;
  float ag[kRows][kTokens], au[kRows][kTokens];
#pragma unroll
  for (int q = 0; q < kRows; ++q) {
#pragma unroll
    for (int t = 0; t < kTokens; ++t) ag[q][t] = au[q][t] = 0.0f;
  }
  AccumulateRows<kType, kRows, kTokens>(wg, r0, x, n, lane, 32, ag);
  AccumulateRows<kType, kRows, kTokens>(wu, r0, x, n, lane, 32, au);
#pragma unroll
  for (int q = 0; q < kRows; ++q) {
#pragma unroll
    for (int t = 0; t < kTokens; ++t) {
      const float gv = WarpSum(ag[q][t]), uv = WarpSum(au[q][t]);
      if (lane == 0 && t < n && r0 + q < wg.rows) {
        out_up[t * wg.rows + r0 + q] = uv;
        out_gate[t * wg.rows + r0 + q] = gv / (1.0f + expf(-gv)) * uv;
      }
    }
  }
}

template <int kType>
cudaError_t LaunchGemvSwiGlu(const DeviceWeight& wg, const DeviceWeight& wu, const float* x, int n,
                             float* out_gate, float* out_up, cudaStream_t s) {
  if (n <= 2) {
    const int blocks = static_cast<int>((wg.rows + kWarpsPerBlock - 1) / kWarpsPerBlock);
    GemvSwiGluKernel<kType, 1, 2><<<blocks, kThreads, 0, s>>>(wg, wu, x, n, out_gate, out_up);
  } else {
    const int blocks = static_cast<int>((wg.rows + 2 * kWarpsPerBlock - 1) / (2 * kWarpsPerBlock));
    GemvSwiGluKernel<kType, 2, kMaxGemvTokens>
        <<<blocks, kThreads, 0, s>>>(wg, wu, x, n, out_gate, out_up);
  }
  return Launched();
}

}  // namespace

bool GemvSwiGluSupported(const DeviceWeight& gate, const DeviceWeight& up, const float* x) {
  return KnownType(gate.type) && gate.type == up.type && gate.rows == up.rows &&
         gate.cols == up.cols && gate.cols % LaneColsOf(gate.type) == 0 && gate.data && up.data &&
         reinterpret_cast<uintptr_t>(x) % 16 == 0 &&
         reinterpret_cast<uintptr_t>(gate.data) % 16 == 0 &&
         reinterpret_cast<uintptr_t>(up.data) % 16 == 0 &&
         (ByteAligned(gate.type) ? gate.cols % BlockValues(gate.type) == 0 &&
                                       (ScalarChunkType(gate.type) || gate.row_bytes % 2 == 0)
                                 : gate.row_bytes % 16 == 0 && up.row_bytes % 16 == 0);
}

cudaError_t GemvSwiGlu(const DeviceWeight& gate, const DeviceWeight& up, const float* x, int n,
                       float* out_gate, float* out_up, cudaStream_t s) {
  if (n <= 0) return cudaSuccess;
  if (!x || !out_gate || !out_up || n > kMaxGemvTokens || !GemvSwiGluSupported(gate, up, x)) {
    return cudaErrorInvalidValue;
  }
  return DispatchType(gate.type, [&](auto t) {
    return LaunchGemvSwiGlu<decltype(t)::value>(gate, up, x, n, out_gate, out_up, s);
  });
}

}  // namespace chorus::kernels
