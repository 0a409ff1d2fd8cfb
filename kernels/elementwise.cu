// Elementwise and row kernels: embedding gather, RMSNorm, RoPE, bias, SwiGLU, residual add,
// row gather, paged KV append.
#include "common.cuh"

namespace chorus::kernels {
namespace {

bool ValidRope(const RopeArgs& r, int head_dim) {
  return r.rope_dim > 0 && r.rope_dim % 2 == 0 && r.rope_dim <= head_dim && r.freq_base > 0 &&
         r.freq_scale > 0;
}

__global__ void EmbedKernel(DeviceWeight t, const int32_t* tokens, float* out) {
  const int i = blockIdx.x;
  const uint8_t* row = static_cast<const uint8_t*>(t.data) + tokens[i] * t.row_bytes;
  for (int64_t j = threadIdx.x; j < t.cols; j += blockDim.x)
    out[i * t.cols + j] = WeightAt(t.type, row, j);
}

// One block per row. With `add`, first x += add (the residual add fused in front of the norm);
// each thread reads back only the elements it wrote, so no extra barrier is needed.
__global__ void RmsNormKernel(float* x_mut, const float* x, const float* add, const float* w, int d,
                              float eps, float* out) {
  __shared__ float partial[kThreads / 32];
  const int64_t base = static_cast<int64_t>(blockIdx.x) * d;
  const float* xr = x + base;
  float ss = 0;
  for (int j = threadIdx.x; j < d; j += blockDim.x) {
    float v = xr[j];
    if (add != nullptr) {
      v += add[base + j];
      x_mut[base + j] = v;
    }
    ss += v * v;
  }
  ss = WarpSum(ss);
  if (threadIdx.x % 32 == 0) partial[threadIdx.x / 32] = ss;
  __syncthreads();
  if (threadIdx.x < 32) {
    float v = threadIdx.x < blockDim.x / 32 ? partial[threadIdx.x] : 0.0f;
    v = WarpSum(v);
    if (threadIdx.x == 0) partial[0] = v;
  }
  __syncthreads();
  const float scale = rsqrtf(partial[0] / d + eps);
  for (int j = threadIdx.x; j < d; j += blockDim.x) out[base + j] = w[j] * (scale * xr[j]);
}

// One thread per (token, head, pair), over the heads of `a` and then those of `b` (Q and K of
// the same tokens in one launch; heads_b = 0 for one tensor).
__global__ void RopeKernel(float* a, int heads_a, float* b, int heads_b, const int32_t* positions,
                           int n, int head_dim, RopeArgs rope) {
  const int half = rope.rope_dim / 2;
  const int heads = heads_a + heads_b;
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= static_cast<int64_t>(n) * heads * half) return;
  const int i = static_cast<int>(idx % half);
  const int64_t th = idx / half;  // token * heads + head
  const int t = static_cast<int>(th / heads);
  const int h = static_cast<int>(th % heads);
  float* v = h < heads_a ? a + (static_cast<int64_t>(t) * heads_a + h) * head_dim
                         : b + (static_cast<int64_t>(t) * heads_b + (h - heads_a)) * head_dim;
  RotatePair(v, i, positions[t], rope);
}

__global__ void AddBiasKernel(float* x, const float* bias, int64_t total, int d) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < total) x[i] += bias[i % d];
}

__global__ void SwiGluKernel(const float* g, const float* u, int64_t count, float* out) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < count) out[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

__global__ void AddKernel(float* x, const float* y, int64_t count) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < count) x[i] += y[i];
}

__global__ void GatherRowsKernel(const float* x, const int32_t* rows, int d, float* out) {
  const int j = blockIdx.x;
  for (int c = threadIdx.x; c < d; c += blockDim.x)
    out[static_cast<int64_t>(j) * d + c] = x[static_cast<int64_t>(rows[j]) * d + c];
}

// Batch row t's K and V [kv_dim] into its sequence's cache slot; the block's threads split the
// row.
template <typename T>
__device__ void StoreRowKv(const float* k, const float* v, const DeviceLayout& l, int t, int kv_dim,
                           T* kc, T* vc) {
  const int64_t slot = Slot(TableOf(l, t), l.positions[t], l.block_size);
  for (int c = threadIdx.x; c < kv_dim; c += blockDim.x) {
    KvStore(kc + slot * kv_dim + c, k[static_cast<int64_t>(t) * kv_dim + c]);
    KvStore(vc + slot * kv_dim + c, v[static_cast<int64_t>(t) * kv_dim + c]);
  }
}

template <typename T>
__global__ void KvWriteKernel(const float* k, const float* v, DeviceLayout l, int kv_dim, T* kc,
                              T* vc) {
  StoreRowKv(k, v, l, blockIdx.x, kv_dim, kc, vc);
}

// One block per token: RoPE over the heads of Q and K, then, once every head of K is rotated,
// K and V into the token's cache slot.
template <typename T>
__global__ void RopeKvWriteKernel(float* q, int heads_q, float* k, int heads_k, const float* v,
                                  DeviceLayout l, int head_dim, RopeArgs rope, T* kc, T* vc) {
  const int t = blockIdx.x;
  const int half = rope.rope_dim / 2;
  for (int idx = threadIdx.x; idx < (heads_q + heads_k) * half; idx += blockDim.x) {
    const int h = idx / half;
    float* x = h < heads_q ? q + (static_cast<int64_t>(t) * heads_q + h) * head_dim
                           : k + (static_cast<int64_t>(t) * heads_k + (h - heads_q)) * head_dim;
    RotatePair(x, idx % half, l.positions[t], rope);
  }
  __syncthreads();  // K is rotated before it is stored
  StoreRowKv(k, v, l, t, heads_k * head_dim, kc, vc);
}

}  // namespace

cudaError_t Embed(const DeviceWeight& table, const int32_t* tokens, int n, float* out,
                  cudaStream_t s) {
  if (n <= 0) return cudaSuccess;
  if (!table.data || !tokens || !out) return cudaErrorInvalidValue;
  EmbedKernel<<<n, kThreads, 0, s>>>(table, tokens, out);
  return Launched();
}

cudaError_t RmsNorm(const float* x, const float* w, int n, int d, float eps, float* out,
                    cudaStream_t s) {
  if (n <= 0) return cudaSuccess;
  if (!x || !w || !out || d <= 0) return cudaErrorInvalidValue;
  RmsNormKernel<<<n, kThreads, 0, s>>>(nullptr, x, nullptr, w, d, eps, out);
  return Launched();
}

cudaError_t AddRmsNorm(float* x, const float* y, const float* w, int n, int d, float eps,
                       float* out, cudaStream_t s) {
  if (n <= 0) return cudaSuccess;
  if (!x || !y || !w || !out || d <= 0 || out == x) return cudaErrorInvalidValue;
  RmsNormKernel<<<n, kThreads, 0, s>>>(x, x, y, w, d, eps, out);
  return Launched();
}

cudaError_t Rope(float* x, const int32_t* positions, int n, int heads, int head_dim,
                 const RopeArgs& rope, cudaStream_t s) {
  return RopePair(x, heads, nullptr, 0, positions, n, head_dim, rope, s);
}

cudaError_t RopePair(float* a, int heads_a, float* b, int heads_b, const int32_t* positions, int n,
                     int head_dim, const RopeArgs& rope, cudaStream_t s) {
  if (n <= 0 || heads_a + heads_b <= 0) return cudaSuccess;
  if (!a || (heads_b > 0 && !b) || heads_a < 0 || heads_b < 0 || !positions ||
      !ValidRope(rope, head_dim)) {
    return cudaErrorInvalidValue;
  }
  const int64_t total = static_cast<int64_t>(n) * (heads_a + heads_b) * (rope.rope_dim / 2);
  RopeKernel<<<Blocks(total), kThreads, 0, s>>>(a, heads_a, b, heads_b, positions, n, head_dim,
                                                rope);
  return Launched();
}

cudaError_t AddBias(float* x, const float* bias, int n, int d, cudaStream_t s) {
  const int64_t total = static_cast<int64_t>(n) * d;
  if (total <= 0) return cudaSuccess;
  if (!x || !bias) return cudaErrorInvalidValue;
  AddBiasKernel<<<Blocks(total), kThreads, 0, s>>>(x, bias, total, d);
  return Launched();
}

cudaError_t SwiGlu(const float* gate, const float* up, int64_t count, float* out, cudaStream_t s) {
  if (count <= 0) return cudaSuccess;
  if (!gate || !up || !out) return cudaErrorInvalidValue;
  SwiGluKernel<<<Blocks(count), kThreads, 0, s>>>(gate, up, count, out);
  return Launched();
}

cudaError_t Add(float* x, const float* y, int64_t count, cudaStream_t s) {
  if (count <= 0) return cudaSuccess;
  if (!x || !y) return cudaErrorInvalidValue;
  AddKernel<<<Blocks(count), kThreads, 0, s>>>(x, y, count);
  return Launched();
}

cudaError_t GatherRows(const float* x, const int32_t* rows, int m, int d, float* out,
                       cudaStream_t s) {
  if (m <= 0) return cudaSuccess;
  if (!x || !rows || !out) return cudaErrorInvalidValue;
  GatherRowsKernel<<<m, kThreads, 0, s>>>(x, rows, d, out);
  return Launched();
}

cudaError_t KvWrite(const float* k, const float* v, const DeviceLayout& layout, int kv_dim,
                    bool half_kv, void* k_cache, void* v_cache, cudaStream_t s) {
  if (layout.num_tokens <= 0) return cudaSuccess;
  if (!k || !v || !k_cache || !v_cache || !layout.positions || !layout.block_tables)
    return cudaErrorInvalidValue;
  if (half_kv) {
    KvWriteKernel<<<layout.num_tokens, kThreads, 0, s>>>(
        k, v, layout, kv_dim, static_cast<__half*>(k_cache), static_cast<__half*>(v_cache));
  } else {
    KvWriteKernel<<<layout.num_tokens, kThreads, 0, s>>>(
        k, v, layout, kv_dim, static_cast<float*>(k_cache), static_cast<float*>(v_cache));
  }
  return Launched();
}

cudaError_t RopeKvWrite(float* q, int heads_q, float* k, int heads_k, const float* v,
                        const DeviceLayout& layout, int head_dim, const RopeArgs& rope,
                        bool half_kv, void* k_cache, void* v_cache, cudaStream_t s) {
  if (layout.num_tokens <= 0) return cudaSuccess;
  if (!q || !k || !v || !k_cache || !v_cache || !layout.positions || !layout.block_tables ||
      heads_q < 0 || heads_k <= 0 || !ValidRope(rope, head_dim)) {
    return cudaErrorInvalidValue;
  }
  if (half_kv) {
    RopeKvWriteKernel<<<layout.num_tokens, kThreads, 0, s>>>(
        q, heads_q, k, heads_k, v, layout, head_dim, rope, static_cast<__half*>(k_cache),
        static_cast<__half*>(v_cache));
  } else {
    RopeKvWriteKernel<<<layout.num_tokens, kThreads, 0, s>>>(
        q, heads_q, k, heads_k, v, layout, head_dim, rope, static_cast<float*>(k_cache),
        static_cast<float*>(v_cache));
  }
  return Launched();
}

}  // namespace chorus::kernels
