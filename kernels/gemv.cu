// Decode matmul: dequantize-and-dot GEMV over up to kMaxGemvTokens activation rows, so the
// weights are read once for the whole decode batch. A warp owns kRows weight rows: for each step
// a lane loads its columns of those rows (one 16-byte load where the layout allows: the
// regrouped Q4_0 / Q8_0 take 32 / 16 columns per load), then, 8 columns at a time, loads the
// activations once into registers and uses them for all of its rows (1 row per warp for 1-2
// tokens, where parallelism matters; 4 rows for 3-8 tokens, where re-reading the activations per
// row would make L1 traffic, not HBM, the limit). Matrices with few rows (QKV, O, down at
// batch 1) would leave the device half idle, so the warps of a block then also split each row's
// columns (GemvSplit) and add their partial sums in shared memory.
#include "gemv_tile.cuh"

namespace chorus::kernels {
namespace {

using namespace gemv;  // NOLINT: this file's own helpers

// A group of weights sharing the input: block ranges [first_block[i], first_block[i + 1]) belong
// to weight i.
struct GemvGroupArgs {
  DeviceWeight w[kMaxGemvGroup];
  float* out[kMaxGemvGroup];
  int first_block[kMaxGemvGroup + 1];
};

__device__ __forceinline__ int WeightOfBlock(const GemvGroupArgs& g) {
  int which = 0;
#pragma unroll
  for (int i = 1; i < kMaxGemvGroup; ++i) which += static_cast<int>(blockIdx.x) >= g.first_block[i];
  return which;
}

// Vectorized path (the launcher checks alignment and cols % LaneColsOf == 0). `split` warps share
// each group of kRows rows: warp slice s takes the lane steps s, s + split, ...; their sums meet
// in shared memory and are added in slice order (the same result for every launch).
template <int kType, int kRows, int kTokens>
__global__ void __launch_bounds__(kThreads)
    GemvKernel(GemvGroupArgs g, const float* x, int n, int split) {
  __shared__ float partial[kWarpsPerBlock][kRows * kTokens];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int which = WeightOfBlock(g);
  const DeviceWeight& w = g.w[which];
  float* out = g.out[which];
  const int slice = warp % split;
  const int64_t r0 =
      (static_cast<int64_t>(blockIdx.x - g.first_block[which]) * (kWarpsPerBlock / split) +
       warp / split) *
      kRows;
  // No early return: with split > 1 every thread meets at the barrier below.
  float acc[kRows][kTokens];
#pragma unroll
  for (int q = 0; q < kRows; ++q) {
#pragma unroll
    for (int t = 0; t < kTokens; ++t) acc[q][t] = 0.0f;
  }
  if (r0 < w.rows) {
    AccumulateRows<kType, kRows, kTokens>(w, r0, x, n, static_cast<int64_t>(slice) * 32 + lane,
                                          static_cast<int64_t>(32) * split, acc);
  }
#pragma unroll
  for (int q = 0; q < kRows; ++q) {
#pragma unroll
    for (int t = 0; t < kTokens; ++t) {
      const float v = WarpSum(acc[q][t]);
      if (lane == 0) {
        if (split == 1) {
          if (t < n && r0 + q < w.rows) out[t * w.rows + r0 + q] = v;
        } else {
          partial[warp][q * kTokens + t] = v;
        }
      }
    }
  }
  if (split == 1) return;  // the same for the whole block
  __syncthreads();
  const int q = lane / kTokens, t = lane % kTokens;
  if (slice == 0 && lane < kRows * kTokens && t < n && r0 + q < w.rows) {
    float v = 0.0f;
    for (int s = 0; s < split; ++s) v += partial[warp + s][lane];
    out[t * w.rows + r0 + q] = v;
  }
}

// Any layout and alignment: one value at a time through WeightAt, one row per warp.
template <int kTokens>
__global__ void GemvScalarKernel(GemvGroupArgs g, const float* x, int n) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int which = WeightOfBlock(g);
  const DeviceWeight& w = g.w[which];
  const int64_t r = static_cast<int64_t>(blockIdx.x - g.first_block[which]) * kWarpsPerBlock + warp;
  if (r >= w.rows) return;
  const uint8_t* row = static_cast<const uint8_t*>(w.data) + r * w.row_bytes;
  float acc[kTokens];
#pragma unroll
  for (int t = 0; t < kTokens; ++t) acc[t] = 0.0f;
  for (int64_t j = lane; j < w.cols; j += 32) {
    const float wv = WeightAt(w.type, row, j);
#pragma unroll
    for (int t = 0; t < kTokens; ++t) {
      if (t < n) acc[t] += wv * x[t * w.cols + j];
    }
  }
#pragma unroll
  for (int t = 0; t < kTokens; ++t) {
    const float v = WarpSum(acc[t]);
    if (lane == 0 && t < n) g.out[which][t * w.rows + r] = v;
  }
}

// Block ranges of the group's weights for `rows_per_block` rows per block; false if too many.
bool PlanBlocks(const DeviceWeight* w, float* const* out, int count, int64_t rows_per_block,
                GemvGroupArgs* g, int* blocks) {
  int64_t total = 0;
  for (int i = 0; i < kMaxGemvGroup; ++i) {
    const int k = i < count ? i : count - 1;  // unused slots repeat the last weight, no blocks
    g->w[i] = w[k];
    g->out[i] = out[k];
    g->first_block[i] = static_cast<int>(total);
    if (i < count) total += (w[i].rows + rows_per_block - 1) / rows_per_block;
    if (total > 0x7fffffff) return false;
  }
  g->first_block[kMaxGemvGroup] = static_cast<int>(total);
  *blocks = static_cast<int>(total);
  return true;
}

template <int kType, int kRows, int kTokens>
cudaError_t LaunchGemvRows(const DeviceWeight* w, float* const* out, int count, const float* x,
                           int n, int split, cudaStream_t s) {
  GemvGroupArgs g{};
  int blocks = 0;
  if (!PlanBlocks(w, out, count, kWarpsPerBlock / split * kRows, &g, &blocks)) {
    return cudaErrorInvalidValue;
  }
  if (blocks <= 0) return cudaSuccess;
  GemvKernel<kType, kRows, kTokens><<<blocks, kThreads, 0, s>>>(g, x, n, split);
  return Launched();
}

// The current device's SM count, asked of the driver once per device and thread (every eager
// GEMV launch needs it).
int Multiprocessors() {
  thread_local int cached_device = -1, cached_sms = 1;
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess) {
    cudaGetLastError();
    return 1;
  }
  if (device != cached_device) {
    int sms = 0;
    if (cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device) != cudaSuccess) {
      cudaGetLastError();
      sms = 1;
    }
    cached_device = device;
    cached_sms = sms > 0 ? sms : 1;
  }
  return cached_sms;
}

// Whether the vector loads can read these weights (every row start and x at a 16-byte boundary
// or, for ggml's Q4_0 / Q8_0, 2-byte; whole lane loads per row).
bool VectorAligned(const DeviceWeight* w, int count, const float* x) {
  bool aligned = reinterpret_cast<uintptr_t>(x) % 16 == 0;
  for (int i = 0; i < count; ++i) {
    const int t = w[i].type;
    aligned = aligned && w[i].cols % LaneColsOf(t) == 0 &&
              reinterpret_cast<uintptr_t>(w[i].data) % 16 == 0 &&
              (ScalarChunkType(t) ||
               ((t == kQ8_0 || t == kQ4_0) ? w[i].row_bytes % 2 == 0 : w[i].row_bytes % 16 == 0));
  }
  return aligned;
}

template <int kType>
cudaError_t LaunchGemv(const DeviceWeight* w, float* const* out, int count, const float* x, int n,
                       cudaStream_t s) {
  if (!VectorAligned(w, count, x)) {
    GemvGroupArgs g{};
    int blocks = 0;
    if (!PlanBlocks(w, out, count, kWarpsPerBlock, &g, &blocks)) return cudaErrorInvalidValue;
    if (blocks <= 0) return cudaSuccess;
    GemvScalarKernel<kMaxGemvTokens><<<blocks, kThreads, 0, s>>>(g, x, n);
    return Launched();
  }
  const int split = GemvSplit(w, count, n, Multiprocessors());
  // Registers hold kTokens activation rows: 2 for the batch-1 path keeps occupancy high.
  if (n <= 2) return LaunchGemvRows<kType, 1, 2>(w, out, count, x, n, split, s);
  return LaunchGemvRows<kType, 4, kMaxGemvTokens>(w, out, count, x, n, split, s);
}

}  // namespace

cudaError_t Gemv(const DeviceWeight& w, const float* x, int n, float* out, cudaStream_t s) {
  return GemvGroup(&w, &out, 1, x, n, s);
}

int GemvSplit(const DeviceWeight* w, int count, int n, int sms) {
  const int rows_per_warp = n <= 2 ? 1 : 4;
  const int64_t steps = (w[0].cols + 32 * LaneColsOf(w[0].type) - 1) / (32 * LaneColsOf(w[0].type));
  auto blocks = [&](int split) {
    const int64_t per_block = kWarpsPerBlock / split * rows_per_warp;
    int64_t b = 0;
    for (int i = 0; i < count; ++i) b += (w[i].rows + per_block - 1) / per_block;
    return b;
  };
  // Split while the device would hold fewer than 4 blocks per SM and every warp keeps a step.
  int split = 1;
  while (split < kWarpsPerBlock && steps >= 2 * split && blocks(split) < 4 * int64_t{sms}) {
    split *= 2;
  }
  return split;
}

cudaError_t GemvGroup(const DeviceWeight* w, float* const* out, int count, const float* x, int n,
                      cudaStream_t s) {
  if (n <= 0) return cudaSuccess;
  if (!w || !out || !x || count < 1 || count > kMaxGemvGroup || n > kMaxGemvTokens) {
    return cudaErrorInvalidValue;
  }
  for (int i = 0; i < count; ++i) {
    if (!w[i].data || !out[i] || !KnownType(w[i].type) || w[i].type != w[0].type ||
        w[i].cols != w[0].cols) {
      return cudaErrorInvalidValue;
    }
    if (w[i].cols % BlockValues(w[i].type) != 0) return cudaErrorInvalidValue;
  }
  return DispatchType(
      w[0].type, [&](auto t) { return LaunchGemv<decltype(t)::value>(w, out, count, x, n, s); });
}

}  // namespace chorus::kernels
