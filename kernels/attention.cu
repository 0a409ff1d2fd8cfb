// Paged causal attention with GQA.
//  - Decode kernel (flash-decoding): the positions a query attends to are split into chunks of
//    kAttentionChunk; one CTA of kDecodeWarps warps per (row, KV head, chunk) serves every query
//    head of the GQA group, so each K/V row is read once for the group. The chunk's cache slots
//    are resolved from the block table into shared memory first; warp w takes keys w, w + 4,
//    ..., two keys in flight per step, each lane holding head_dim / 32 consecutive dims (one
//    vector load per K and V row); the warps' online-softmax states are merged in shared memory.
//    With one chunk the CTA writes the output, else a second kernel merges the chunks. Head
//    sizes that are not a multiple of 32 (or over 128, or groups over 8 heads) take the
//    one-warp-per-(row, head, chunk) kernel below.
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

constexpr int kDecodeWarps = 4;
constexpr int kMaxGroup = 8;  // query heads per KV head the decode kernel serves

// kVec consecutive cache elements as floats (16 / 8-byte loads; the caller keeps them aligned).
template <typename T, int kVec>
__device__ __forceinline__ void LoadRow(const T* p, float (&v)[kVec]) {
  if constexpr (sizeof(T) == 4 && kVec == 4) {
    const float4 a = *reinterpret_cast<const float4*>(p);
    v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w;
  } else if constexpr (sizeof(T) == 4 && kVec == 2) {
    const float2 a = *reinterpret_cast<const float2*>(p);
    v[0] = a.x, v[1] = a.y;
  } else if constexpr (sizeof(T) == 2 && kVec == 4) {
    const uint2 a = *reinterpret_cast<const uint2*>(p);
    v[0] = HalfBits(a.x & 0xffff), v[1] = HalfBits(a.x >> 16);
    v[2] = HalfBits(a.y & 0xffff), v[3] = HalfBits(a.y >> 16);
  } else {
#pragma unroll
    for (int i = 0; i < kVec; ++i) v[i] = KvLoad(p + i);
  }
}

// Online-softmax state of one query head in one warp: running max, sum and weighted values.
template <int kVec>
struct HeadState {
  float m, sum, acc[kVec];
};

template <int kVec>
__device__ __forceinline__ void AddKey(HeadState<kVec>& st, float s, const float (&v)[kVec]) {
  const float m_new = fmaxf(st.m, s);
  const float corr = expf(st.m - m_new), e = expf(s - m_new);
  st.sum = st.sum * corr + e;
#pragma unroll
  for (int i = 0; i < kVec; ++i) st.acc[i] = st.acc[i] * corr + e * v[i];
  st.m = m_new;
}

size_t DecodeSharedBytes(int hd, int group) {
  return sizeof(int64_t) * kAttentionChunk +
         sizeof(float) * static_cast<size_t>(kDecodeWarps) * group * (hd + 2);
}

// One merge per (head, dim) across the warps' states in `part` ([warps, group, hd + 2]):
// the normalized output (final_out), or the split's values, max and sum (scratch).
__device__ void MergeWarpStates(const float* part, int hd, int group, int kvh, int heads, int t,
                                int row, int split, int splits, float* scratch, float* final_out) {
  for (int idx = threadIdx.x; idx < group * hd; idx += blockDim.x) {
    const int g = idx / hd, d = idx % hd;
    float m = -CUDART_INF_F;
    for (int w = 0; w < kDecodeWarps; ++w) m = fmaxf(m, part[(w * group + g) * (hd + 2) + hd]);
    float total = 0.0f, v = 0.0f;
    for (int w = 0; w < kDecodeWarps; ++w) {
      const float* pw = part + (w * group + g) * (hd + 2);
      if (pw[hd] == -CUDART_INF_F) continue;  // this warp saw no key
      const float c = expf(pw[hd] - m);
      total += pw[hd + 1] * c;
      v += pw[d] * c;
    }
    const int h = kvh * group + g;
    if (final_out != nullptr) {
      final_out[(static_cast<int64_t>(t) * heads + h) * hd + d] = v / total;
      continue;
    }
    float* out = scratch + ((static_cast<int64_t>(row) * heads + h) * splits + split) * (hd + 2);
    out[d] = v;  // the merge kernel's layout: values, then max and sum
    if (d == 0) out[hd] = m, out[hd + 1] = total;
  }
}

template <typename T, int kVec>
__global__ void __launch_bounds__(kDecodeWarps * 32)
    DecodeAttentionKernel(const float* q, const T* kc, const T* vc, DeviceLayout l,
                          const int32_t* rows, int heads, int kv_heads, float scale, int splits,
                          float* scratch, float* final_out) {
  constexpr int hd = 32 * kVec;
  extern __shared__ float smem[];
  int64_t* slots = reinterpret_cast<int64_t*>(smem);                // [kAttentionChunk]
  float* part = reinterpret_cast<float*>(slots + kAttentionChunk);  // [warps, group, hd + 2]
  const int split = blockIdx.x, kvh = blockIdx.y, row = blockIdx.z;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int group = heads / kv_heads, kv_dim = kv_heads * hd;
  const int t = rows ? rows[row] : row;
  const int pos = l.positions[t];
  const int begin = split * kAttentionChunk;
  const int end = min(begin + kAttentionChunk, pos + 1);
  const int32_t* table = TableOf(l, t);
  for (int p = begin + threadIdx.x; p < end; p += blockDim.x) {
    slots[p - begin] = Slot(table, p, l.block_size);
  }
  float qv[kMaxGroup][kVec];
  HeadState<kVec> st[kMaxGroup];
#pragma unroll
  for (int g = 0; g < kMaxGroup; ++g) {
    st[g].m = -CUDART_INF_F, st[g].sum = 0.0f;
#pragma unroll
    for (int i = 0; i < kVec; ++i) {
      st[g].acc[i] = 0.0f;
      qv[g][i] =
          g < group
              ? q[(static_cast<int64_t>(t) * heads + kvh * group + g) * hd + lane * kVec + i] *
                    scale
              : 0.0f;
    }
  }
  __syncthreads();  // slots are resolved
  const int64_t col = static_cast<int64_t>(kvh) * hd + lane * kVec;
  for (int p = begin + warp; p < end; p += 2 * kDecodeWarps) {
    const bool two = p + kDecodeWarps < end;
    float k0[kVec], v0[kVec], k1[kVec], v1[kVec];
    LoadRow<T, kVec>(kc + slots[p - begin] * kv_dim + col, k0);
    LoadRow<T, kVec>(vc + slots[p - begin] * kv_dim + col, v0);
    if (two) {  // a second key in flight before the first one's reductions
      LoadRow<T, kVec>(kc + slots[p + kDecodeWarps - begin] * kv_dim + col, k1);
      LoadRow<T, kVec>(vc + slots[p + kDecodeWarps - begin] * kv_dim + col, v1);
    }
#pragma unroll
    for (int g = 0; g < kMaxGroup; ++g) {
      if (g >= group) break;
      float s0 = 0.0f, s1 = 0.0f;
#pragma unroll
      for (int i = 0; i < kVec; ++i) {
        s0 += qv[g][i] * k0[i];
        if (two) s1 += qv[g][i] * k1[i];
      }
      s0 = WarpSum(s0);
      AddKey(st[g], s0, v0);
      if (two) AddKey(st[g], WarpSum(s1), v1);
    }
  }
  // Each warp's states into shared memory, then one merge per (head, dim) across the warps.
#pragma unroll
  for (int g = 0; g < kMaxGroup; ++g) {
    if (g >= group) break;
    float* w = part + (static_cast<int64_t>(warp) * group + g) * (hd + 2);
#pragma unroll
    for (int i = 0; i < kVec; ++i) w[lane * kVec + i] = st[g].acc[i];
    if (lane == 0) w[hd] = st[g].m, w[hd + 1] = st[g].sum;
  }
  __syncthreads();
  MergeWarpStates(part, hd, group, kvh, heads, t, row, split, splits, scratch, final_out);
}

template <typename T>
cudaError_t LaunchDecode(const float* q, const void* k_cache, const void* v_cache,
                         const DeviceLayout& layout, const int32_t* rows, int num_rows, int heads,
                         int kv_heads, int hd, float scale, int splits, float* scratch,
                         float* direct, cudaStream_t s) {
  const dim3 grid(splits, kv_heads, num_rows);
  const size_t smem = DecodeSharedBytes(hd, heads / kv_heads);
  const T* kc = static_cast<const T*>(k_cache);
  const T* vc = static_cast<const T*>(v_cache);
  if (hd == 64) {
    DecodeAttentionKernel<T, 2><<<grid, kDecodeWarps * 32, smem, s>>>(
        q, kc, vc, layout, rows, heads, kv_heads, scale, splits, scratch, direct);
  } else {
    DecodeAttentionKernel<T, 4><<<grid, kDecodeWarps * 32, smem, s>>>(
        q, kc, vc, layout, rows, heads, kv_heads, scale, splits, scratch, direct);
  }
  return cudaGetLastError();
}

constexpr int kTiledWarps = 4;
constexpr int kQueriesPerWarp = kQueryTile / kTiledWarps;
constexpr int kTiledDims = kMaxTiledHeadDim / 32;

size_t TiledSharedBytes(int hd) {
  return sizeof(float) *
         (static_cast<size_t>(kQueryTile) * hd + static_cast<size_t>(kKeyTile) * (hd + 1) +
          static_cast<size_t>(kKeyTile) * hd);
}

// Keys kb .. kb + kKeyTile - 1 (zero past `last`) of one KV head into shared memory:
// ks [kKeyTile, hd + 1] (padded), vs [kKeyTile, hd].
template <typename T>
__device__ void StageKeyTile(const T* kc, const T* vc, const int32_t* table, int block_size,
                             int kv_dim, int kvh, int hd, int kb, int last, float* ks, float* vs) {
  const int kstride = hd + 1;
  for (int i = threadIdx.x; i < kKeyTile * hd; i += blockDim.x) {
    const int r = i / hd, d = i % hd;
    const int p = kb + r;
    float kv = 0.0f, vv = 0.0f;
    if (p <= last) {
      const int64_t off = Slot(table, p, block_size) * kv_dim + kvh * hd + d;
      kv = KvLoad(kc + off);
      vv = KvLoad(vc + off);
    }
    ks[r * kstride + d] = kv;
    vs[r * hd + d] = vv;
  }
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
    StageKeyTile(kc, vc, table, l.block_size, kv_dim, kvh, hd, kb, last, ks, vs);
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
  // With one split the first kernel writes the output itself.
  float* direct = num_splits == 1 ? out : nullptr;
  cudaError_t e = cudaSuccess;
  if ((head_dim == 64 || head_dim == 128) && heads / kv_heads <= kMaxGroup && kv_heads <= 65535) {
    e = half_kv ? LaunchDecode<__half>(q, k_cache, v_cache, layout, rows, num_rows, heads, kv_heads,
                                       head_dim, scale, num_splits, scratch, direct, s)
                : LaunchDecode<float>(q, k_cache, v_cache, layout, rows, num_rows, heads, kv_heads,
                                      head_dim, scale, num_splits, scratch, direct, s);
    if (e != cudaSuccess || direct != nullptr) return e;
    AttentionMergeKernel<<<dim3(heads, num_rows), 128, 0, s>>>(scratch, rows, heads, head_dim,
                                                               num_splits, out);
    return Launched();
  }
  const dim3 grid(num_splits, heads, num_rows);
  if (half_kv) {
    AttentionPartialKernel<<<grid, 32, 0, s>>>(
        q, static_cast<const __half*>(k_cache), static_cast<const __half*>(v_cache), layout, rows,
        heads, kv_heads, head_dim, scale, num_splits, scratch, direct);
  } else {
    AttentionPartialKernel<<<grid, 32, 0, s>>>(
        q, static_cast<const float*>(k_cache), static_cast<const float*>(v_cache), layout, rows,
        heads, kv_heads, head_dim, scale, num_splits, scratch, direct);
  }
  e = cudaGetLastError();
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
