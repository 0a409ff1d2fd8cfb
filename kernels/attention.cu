// Paged causal attention with GQA, flash-decoding style: the positions each query attends to
// are split into chunks of kAttentionChunk; one warp per (token, head, chunk) runs an online
// softmax over its chunk, and a second kernel merges the chunks' partial results. The same
// kernels serve prefill (each query token has its own causal length) and decode.
#include <math_constants.h>

#include "common.cuh"

namespace chorus::kernels {
namespace {

constexpr int kPerLane = kMaxHeadDim / 32;

__global__ void AttentionPartialKernel(const float* q, const float* kc, const float* vc,
                                       DeviceLayout l, int heads, int kv_heads, int hd, float scale,
                                       int splits, float* scratch) {
  const int split = blockIdx.x, h = blockIdx.y, t = blockIdx.z, lane = threadIdx.x;
  const int kvh = h / (heads / kv_heads);
  const int kv_dim = kv_heads * hd;
  const int pos = l.positions[t];
  const int begin = split * kAttentionChunk;
  const int end = min(begin + kAttentionChunk, pos + 1);
  const int32_t* table = l.block_tables + static_cast<int64_t>(l.seq_of_token[t]) * l.max_blocks_per_seq;
  const float* qh = q + (static_cast<int64_t>(t) * heads + h) * hd;
  float qv[kPerLane], acc[kPerLane];
#pragma unroll
  for (int i = 0; i < kPerLane; ++i) {
    const int d = lane + 32 * i;
    qv[i] = d < hd ? qh[d] * scale : 0.0f;
    acc[i] = 0.0f;
  }
  float m = -CUDART_INF_F, sum = 0.0f;
  for (int p = begin; p < end; ++p) {
    const int64_t slot = static_cast<int64_t>(table[p / l.block_size]) * l.block_size + p % l.block_size;
    const float* kp = kc + slot * kv_dim + kvh * hd;
    const float* vp = vc + slot * kv_dim + kvh * hd;
    float s = 0.0f;
#pragma unroll
    for (int i = 0; i < kPerLane; ++i) {
      const int d = lane + 32 * i;
      if (d < hd) s += qv[i] * kp[d];
    }
    s = WarpSum(s);
    const float m_new = fmaxf(m, s);
    const float corr = expf(m - m_new);
    const float e = expf(s - m_new);
    sum = sum * corr + e;
#pragma unroll
    for (int i = 0; i < kPerLane; ++i) {
      const int d = lane + 32 * i;
      if (d < hd) acc[i] = acc[i] * corr + e * vp[d];
    }
    m = m_new;
  }
  float* out = scratch + ((static_cast<int64_t>(t) * heads + h) * splits + split) * (hd + 2);
#pragma unroll
  for (int i = 0; i < kPerLane; ++i) {
    const int d = lane + 32 * i;
    if (d < hd) out[d] = acc[i];
  }
  if (lane == 0) {
    out[hd] = m;
    out[hd + 1] = sum;
  }
}

__global__ void AttentionMergeKernel(const float* scratch, int heads, int hd, int splits, float* out) {
  const int h = blockIdx.x, t = blockIdx.y;
  const float* part = scratch + (static_cast<int64_t>(t) * heads + h) * splits * (hd + 2);
  float m = -CUDART_INF_F;
  for (int s = 0; s < splits; ++s) m = fmaxf(m, part[s * (hd + 2) + hd]);
  float total = 0.0f;
  for (int s = 0; s < splits; ++s) {
    const float ms = part[s * (hd + 2) + hd];
    if (ms > -CUDART_INF_F) total += part[s * (hd + 2) + hd + 1] * expf(ms - m);
  }
  for (int d = threadIdx.x; d < hd; d += blockDim.x) {
    float v = 0.0f;
    for (int s = 0; s < splits; ++s) {
      const float ms = part[s * (hd + 2) + hd];
      if (ms > -CUDART_INF_F) v += part[s * (hd + 2) + d] * expf(ms - m);
    }
    out[(static_cast<int64_t>(t) * heads + h) * hd + d] = v / total;
  }
}

}  // namespace

cudaError_t Attention(const float* q, const float* k_cache, const float* v_cache,
                      const DeviceLayout& layout, int heads, int kv_heads, int head_dim,
                      float scale, int num_splits, float* scratch, float* out, cudaStream_t s) {
  if (layout.num_tokens <= 0) return cudaSuccess;
  if (!q || !k_cache || !v_cache || !scratch || !out || head_dim > kMaxHeadDim || head_dim <= 0 ||
      kv_heads <= 0 || heads % kv_heads != 0 || num_splits <= 0) {
    return cudaErrorInvalidValue;
  }
  AttentionPartialKernel<<<dim3(num_splits, heads, layout.num_tokens), 32, 0, s>>>(
      q, k_cache, v_cache, layout, heads, kv_heads, head_dim, scale, num_splits, scratch);
  cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) return e;
  AttentionMergeKernel<<<dim3(heads, layout.num_tokens), 128, 0, s>>>(scratch, heads, head_dim, num_splits, out);
  return Launched();
}

}  // namespace chorus::kernels
