// Logits processing and sampling on the device, one block per row: raw log-sum-exp (for the
// logprob), greedy argmax, or temperature with top-k / top-p / min-p cut-offs found by binary
// search on the scaled logit (no sort), then one draw: the caller's uniform number, inverse CDF
// over the kept tokens in vocabulary order, the same rule as the CPU Sampler.
#include <math_constants.h>

#include "common.cuh"

namespace chorus::kernels {
namespace {

constexpr int kSampleThreads = 1024;
constexpr int kSearchSteps = 40;

__device__ float BlockMax(float v, float* sh) {
  v = WarpMax(v);
  __syncthreads();
  if (threadIdx.x % 32 == 0) sh[threadIdx.x / 32] = v;
  __syncthreads();
  if (threadIdx.x < 32) {
    float x = threadIdx.x < blockDim.x / 32 ? sh[threadIdx.x] : -CUDART_INF_F;
    x = WarpMax(x);
    if (threadIdx.x == 0) sh[0] = x;
  }
  __syncthreads();
  return sh[0];
}

__device__ double BlockSum(double v, double* sh) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  __syncthreads();
  if (threadIdx.x % 32 == 0) sh[threadIdx.x / 32] = v;
  __syncthreads();
  if (threadIdx.x < 32) {
    double x = threadIdx.x < blockDim.x / 32 ? sh[threadIdx.x] : 0.0;
    for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
    if (threadIdx.x == 0) sh[0] = x;
  }
  __syncthreads();
  return sh[0];
}

// top-k: the largest threshold on l * inv_t that still keeps k tokens (bisection over [mn, ms]).
__device__ float TopKThreshold(const float* l, int vocab, float inv_t, float mn, float ms,
                               int top_k, double* shd) {
  float lo = mn, hi = ms;
  for (int it = 0; it < kSearchSteps; ++it) {
    const float mid = 0.5f * (lo + hi);
    double cnt = 0;
    for (int i = threadIdx.x; i < vocab; i += blockDim.x) cnt += (l[i] * inv_t >= mid) ? 1.0 : 0.0;
    if (BlockSum(cnt, shd) >= top_k)
      lo = mid;
    else
      hi = mid;
  }
  return lo;
}

// top-p: the largest threshold whose kept mass is still >= top_p of the mass above tau_k.
__device__ float TopPThreshold(const float* l, int vocab, float inv_t, float mn, float ms,
                               float tau_k, float top_p, double* shd) {
  double zk = 0;
  for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
    const float s = l[i] * inv_t;
    if (s >= tau_k) zk += expf(s - ms);
  }
  zk = BlockSum(zk, shd);
  float lo = fmaxf(mn, tau_k), hi = ms;
  for (int it = 0; it < kSearchSteps; ++it) {
    const float mid = 0.5f * (lo + hi);
    double mass = 0;
    for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
      const float s = l[i] * inv_t;
      if (s >= mid && s >= tau_k) mass += expf(s - ms);
    }
    if (BlockSum(mass, shd) >= top_p * zk)
      lo = mid;
    else
      hi = mid;
  }
  return lo;
}

// Inverse CDF in vocabulary order over the kept tokens (score >= tau, weight >= min_p):
// contiguous chunks per thread, a prefix over threads. Writes the token to *picked.
__device__ void PickInverseCdf(const float* l, int vocab, float inv_t, float ms, float tau,
                               const SamplingRow& p, double* prefix, double* shd, int* picked) {
  const int t = threadIdx.x;
  const int chunk = (vocab + blockDim.x - 1) / blockDim.x;
  const int begin = min(vocab, t * chunk), end = min(vocab, begin + chunk);
  double mine = 0;
  int last_kept = -1;
  for (int i = begin; i < end; ++i) {
    const float s = l[i] * inv_t;
    const float w = expf(s - ms);
    if (s >= tau && w >= p.min_p) {
      mine += w;
      last_kept = i;
    }
  }
  prefix[t] = mine;
  __syncthreads();
  if (t == 0) {
    double run = 0;
    for (int k = 0; k < blockDim.x; ++k) {
      const double v = prefix[k];
      prefix[k] = run;
      run += v;
    }
    shd[0] = run;  // total kept mass
  }
  __syncthreads();
  const double target = p.uniform * shd[0];
  if (mine > 0 && target >= prefix[t] && target < prefix[t] + mine) {
    double cum = prefix[t];
    for (int i = begin; i < end; ++i) {
      const float s = l[i] * inv_t;
      const float w = expf(s - ms);
      if (s >= tau && w >= p.min_p) {
        cum += w;
        if (target < cum) {
          *picked = i;
          break;
        }
      }
    }
  }
  __syncthreads();
  // Rounding can leave the target at the very top: take the last kept token (the largest
  // kept index of all threads). Every thread reads `picked` between two barriers, before any
  // thread changes it, so the fallback does not depend on which thread runs first.
  const bool none = *picked < 0;
  __syncthreads();
  if (none && last_kept >= 0) atomicMax(picked, last_kept);
}

__global__ void __launch_bounds__(kSampleThreads)
    SampleKernel(const float* logits, int vocab, const SamplingRow* params, int32_t* tokens,
                 float* logprobs) {
  __shared__ float shf[32];
  __shared__ double shd[32];
  __shared__ double prefix[kSampleThreads];
  __shared__ int picked;
  const SamplingRow p = params[blockIdx.x];
  const float* l = logits + static_cast<int64_t>(p.row) * vocab;
  const int t = threadIdx.x;

  float m = -CUDART_INF_F;
  for (int i = t; i < vocab; i += blockDim.x) m = fmaxf(m, l[i]);
  m = BlockMax(m, shf);
  double z = 0;
  for (int i = t; i < vocab; i += blockDim.x) z += exp(static_cast<double>(l[i]) - m);
  z = BlockSum(z, shd);
  const double lse = m + log(z);

  if (t == 0) picked = -1;
  __syncthreads();
  if (p.temperature <= 0.0f) {
    // Greedy: the lowest index holding the maximum.
    for (int i = t; i < vocab; i += blockDim.x) {
      if (l[i] == m)
        atomicMin(reinterpret_cast<unsigned int*>(&picked), static_cast<unsigned int>(i));
    }
  } else {
    const float inv_t = 1.0f / p.temperature;
    const float ms = m * inv_t;
    float mn = CUDART_INF_F;
    for (int i = t; i < vocab; i += blockDim.x) mn = fminf(mn, l[i] * inv_t);
    mn = -BlockMax(-mn, shf);
    const float tau_k = p.top_k > 0 && p.top_k < vocab
                            ? TopKThreshold(l, vocab, inv_t, mn, ms, p.top_k, shd)
                            : -CUDART_INF_F;
    const float tau_p = p.top_p < 1.0f ? TopPThreshold(l, vocab, inv_t, mn, ms, tau_k, p.top_p, shd)
                                       : -CUDART_INF_F;
    PickInverseCdf(l, vocab, inv_t, ms, fmaxf(tau_k, tau_p), p, prefix, shd, &picked);
  }
  __syncthreads();
  if (t == 0) {
    const int tok = picked < 0 ? 0 : picked;
    tokens[blockIdx.x] = tok;
    logprobs[blockIdx.x] = static_cast<float>(l[tok] - lse);
  }
}

}  // namespace

cudaError_t SampleRows(const float* logits, int vocab, const SamplingRow* params, int draws,
                       int32_t* tokens, float* logprobs, cudaStream_t s) {
  if (draws <= 0) return cudaSuccess;
  if (!logits || !params || !tokens || !logprobs || vocab <= 0) return cudaErrorInvalidValue;
  SampleKernel<<<draws, kSampleThreads, 0, s>>>(logits, vocab, params, tokens, logprobs);
  return Launched();
}

}  // namespace chorus::kernels
