// Paged causal attention with GQA.
//  - Split kernel (decode, flash-decoding style): the positions a query attends to are split into
//    chunks of kAttentionChunk; one warp per (row, head, chunk) runs an online softmax over its
//    chunk, and a second kernel merges the chunks' partial results (with one chunk the first
//    kernel writes the output itself: short contexts take one launch).
//  - Tiled kernel (prefill): a block per (query tile, head) stages kKeyTile keys and values in
//    shared memory; lane r of a warp scores key r against one query, the warp updates that
//    query's online softmax once per key tile, then accumulates the values it weights.
#include <math_constants.h>

#include "common.cuh"

namespace chorus::kernels {
namespace {

constexpr int kPerLane = kMaxHeadDim / 32;

template <typename T>
__global__ void AttentionPartialKernel(const float* q, const T* kc, const T* vc, DeviceLayout l,
                                       const int32_t* rows, int heads, int kv_heads, int hd,
                                       float scale, int splits, float* scratch, float* final_out) {
  const int split = blockIdx.x, h = blockIdx.y, row = blockIdx.z, lane = threadIdx.x;
  const int t = rows ? rows[row] : row;
  const int kvh = h / (heads / kv_heads);
  const int kv_dim = kv_heads * hd;
  const int pos = l.positions[t];
  const int begin = split * kAttentionChunk;
  const int end = min(begin + kAttentionChunk, pos + 1);
  const int32_t* table =
      l.block_tables + static_cast<int64_t>(l.seq_of_token[t]) * l.max_blocks_per_seq;
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
    const int64_t slot = Slot(table, p, l.block_size);
    const T* kp = kc + slot * kv_dim + kvh * hd;
    const T* vp = vc + slot * kv_dim + kvh * hd;
    float s = 0.0f;
#pragma unroll
    for (int i = 0; i < kPerLane; ++i) {
      const int d = lane + 32 * i;
      if (d < hd) s += qv[i] * KvLoad(kp + d);
    }
    s = WarpSum(s);
    const float m_new = fmaxf(m, s);
    const float corr = expf(m - m_new);
    const float e = expf(s - m_new);
    sum = sum * corr + e;
#pragma unroll
    for (int i = 0; i < kPerLane; ++i) {
      const int d = lane + 32 * i;
      if (d < hd) acc[i] = acc[i] * corr + e * KvLoad(vp + d);
    }
    m = m_new;
  }
  if (final_out != nullptr) {  // one split: this is the answer, no merge pass
    float* o = final_out + (static_cast<int64_t>(t) * heads + h) * hd;
#pragma unroll
    for (int i = 0; i < kPerLane; ++i) {
      const int d = lane + 32 * i;
      if (d < hd) o[d] = acc[i] / sum;
    }
    return;
  }
  float* out = scratch + ((static_cast<int64_t>(row) * heads + h) * splits + split) * (hd + 2);
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

__global__ void AttentionMergeKernel(const float* scratch, const int32_t* rows, int heads, int hd,
                                     int splits, float* out) {
  const int h = blockIdx.x, row = blockIdx.y;
  const int t = rows ? rows[row] : row;
  const float* part = scratch + (static_cast<int64_t>(row) * heads + h) * splits * (hd + 2);
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

constexpr int kTiledWarps = 4;
constexpr int kQueriesPerWarp = kQueryTile / kTiledWarps;
constexpr int kTiledDims = kMaxTiledHeadDim / 32;

size_t TiledSharedBytes(int hd) {
  return sizeof(float) *
         (static_cast<size_t>(kQueryTile) * hd + static_cast<size_t>(kKeyTile) * (hd + 1) +
          static_cast<size_t>(kKeyTile) * hd);
}

template <typename T>
__global__ void TiledAttentionKernel(const float* q, const T* kc, const T* vc, DeviceLayout l,
                                     const int32_t* tiles, int heads, int kv_heads, int hd,
                                     float scale, float* out) {
  extern __shared__ float smem[];
  const int kstride = hd + 1;           // padded: lane r reads row r without bank conflicts
  float* qs = smem;                     // [kQueryTile, hd], pre-scaled
  float* ks = qs + kQueryTile * hd;     // [kKeyTile, hd + 1]
  float* vs = ks + kKeyTile * kstride;  // [kKeyTile, hd]
  const int h = blockIdx.y;
  const int first = tiles[2 * blockIdx.x], count = tiles[2 * blockIdx.x + 1];
  const int kvh = h / (heads / kv_heads);
  const int kv_dim = kv_heads * hd;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int pos0 = l.positions[first];
  const int last = pos0 + count - 1;
  const int32_t* table =
      l.block_tables + static_cast<int64_t>(l.seq_of_token[first]) * l.max_blocks_per_seq;
  for (int i = threadIdx.x; i < kQueryTile * hd; i += blockDim.x) {
    const int j = i / hd, d = i % hd;
    qs[i] = j < count ? q[(static_cast<int64_t>(first + j) * heads + h) * hd + d] * scale : 0.0f;
  }
  float m[kQueriesPerWarp], sum[kQueriesPerWarp], acc[kQueriesPerWarp][kTiledDims];
#pragma unroll
  for (int qi = 0; qi < kQueriesPerWarp; ++qi) {
    m[qi] = -CUDART_INF_F;
    sum[qi] = 0.0f;
#pragma unroll
    for (int i = 0; i < kTiledDims; ++i) acc[qi][i] = 0.0f;
  }
  for (int kb = 0; kb <= last; kb += kKeyTile) {
    __syncthreads();  // the previous key tile is consumed (first pass: queries are staged)
    for (int i = threadIdx.x; i < kKeyTile * hd; i += blockDim.x) {
      const int r = i / hd, d = i % hd;
      const int p = kb + r;
      float kv = 0.0f, vv = 0.0f;
      if (p <= last) {
        const int64_t off = Slot(table, p, l.block_size) * kv_dim + kvh * hd + d;
        kv = KvLoad(kc + off);
        vv = KvLoad(vc + off);
      }
      ks[r * kstride + d] = kv;
      vs[r * hd + d] = vv;
    }
    __syncthreads();
#pragma unroll
    for (int qi = 0; qi < kQueriesPerWarp; ++qi) {
      const int j = qi * kTiledWarps + warp;  // interleaved, so short tiles use every warp
      const int pos = pos0 + j;
      if (j >= count || kb > pos) continue;  // uniform across the warp
      const int p = kb + lane;
      float s = -CUDART_INF_F;
      if (p <= pos) {
        const float* qr = qs + j * hd;
        const float* kr = ks + lane * kstride;
        float dot = 0.0f;
        for (int d = 0; d < hd; ++d) dot += qr[d] * kr[d];
        s = dot;
      }
      const float m_new = fmaxf(m[qi], WarpMax(s));  // finite: key kb <= pos is always valid
      const float corr = expf(m[qi] - m_new);
      const float e = p <= pos ? expf(s - m_new) : 0.0f;
      sum[qi] = sum[qi] * corr + WarpSum(e);
#pragma unroll
      for (int i = 0; i < kTiledDims; ++i) acc[qi][i] *= corr;
      const int keys = min(kKeyTile, pos - kb + 1);
      for (int r = 0; r < keys; ++r) {
        const float er = __shfl_sync(0xffffffffu, e, r);
        const float* vr = vs + r * hd;
#pragma unroll
        for (int i = 0; i < kTiledDims; ++i) {
          const int d = lane + 32 * i;
          if (d < hd) acc[qi][i] += er * vr[d];
        }
      }
      m[qi] = m_new;
    }
  }
#pragma unroll
  for (int qi = 0; qi < kQueriesPerWarp; ++qi) {
    const int j = qi * kTiledWarps + warp;
    if (j >= count) continue;
    float* o = out + (static_cast<int64_t>(first + j) * heads + h) * hd;
#pragma unroll
    for (int i = 0; i < kTiledDims; ++i) {
      const int d = lane + 32 * i;
      if (d < hd) o[d] = acc[qi][i] / sum[qi];
    }
  }
}

}  // namespace

cudaError_t Attention(const float* q, const void* k_cache, const void* v_cache, bool half_kv,
                      const DeviceLayout& layout, const int32_t* rows, int num_rows, int heads,
                      int kv_heads, int head_dim, float scale, int num_splits, float* scratch,
                      float* out, cudaStream_t s) {
  if (num_rows <= 0) return cudaSuccess;
  if (!q || !k_cache || !v_cache || !scratch || !out || head_dim > kMaxHeadDim || head_dim <= 0 ||
      kv_heads <= 0 || heads % kv_heads != 0 || num_splits <= 0 || num_splits > 65535 ||
      heads > 65535 || num_rows > 65535) {
    return cudaErrorInvalidValue;
  }
  const dim3 grid(num_splits, heads, num_rows);
  // With one split the partial kernel writes the output itself.
  float* direct = num_splits == 1 ? out : nullptr;
  if (half_kv) {
    AttentionPartialKernel<<<grid, 32, 0, s>>>(
        q, static_cast<const __half*>(k_cache), static_cast<const __half*>(v_cache), layout, rows,
        heads, kv_heads, head_dim, scale, num_splits, scratch, direct);
  } else {
    AttentionPartialKernel<<<grid, 32, 0, s>>>(
        q, static_cast<const float*>(k_cache), static_cast<const float*>(v_cache), layout, rows,
        heads, kv_heads, head_dim, scale, num_splits, scratch, direct);
  }
  cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess || direct != nullptr) return e;
  AttentionMergeKernel<<<dim3(heads, num_rows), 128, 0, s>>>(scratch, rows, heads, head_dim,
                                                             num_splits, out);
  return Launched();
}

cudaError_t TiledAttention(const float* q, const void* k_cache, const void* v_cache, bool half_kv,
                           const DeviceLayout& layout, const int32_t* tiles, int num_tiles,
                           int heads, int kv_heads, int head_dim, float scale, float* out,
                           cudaStream_t s) {
  if (num_tiles <= 0) return cudaSuccess;
  if (!q || !k_cache || !v_cache || !tiles || !out || head_dim > kMaxTiledHeadDim ||
      head_dim <= 0 || kv_heads <= 0 || heads % kv_heads != 0 || heads > 65535) {
    return cudaErrorInvalidValue;
  }
  const dim3 grid(num_tiles, heads);
  const size_t smem = TiledSharedBytes(head_dim);
  if (half_kv) {
    TiledAttentionKernel<<<grid, kTiledWarps * 32, smem, s>>>(
        q, static_cast<const __half*>(k_cache), static_cast<const __half*>(v_cache), layout, tiles,
        heads, kv_heads, head_dim, scale, out);
  } else {
    TiledAttentionKernel<<<grid, kTiledWarps * 32, smem, s>>>(
        q, static_cast<const float*>(k_cache), static_cast<const float*>(v_cache), layout, tiles,
        heads, kv_heads, head_dim, scale, out);
  }
  return Launched();
}

}  // namespace chorus::kernels
