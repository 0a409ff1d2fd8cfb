// chorus-bench-cuda: the card's roofline numbers for docs/PERFORMANCE.md: device-to-device copy
// bandwidth and cuBLAS GEMM rates (F32, F16 and BF16 inputs with F32 accumulation).
// Also the decode kernels alone on Llama-3.2-1B shapes: the GEMV (kernels/gemv.cu) as weight bytes
// per second, the LM head (128256 x 2048 GEMV) and decode attention (kernels/attention.cu) at 512
// and 4096 cached positions as K/V bytes per second: what each reaches before launch gaps and
// the other ops count.
// Prints one JSON line. Exits 0 with {"device": "none"} when no GPU is present.
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdio>
#include <initializer_list>
#include <string>
#include <utility>
#include <vector>

#include "kernels.h"

namespace {

namespace kk = chorus::kernels;

float TimeMs(cudaEvent_t a, cudaEvent_t b) {
  float ms = 0;
  cudaEventElapsedTime(&ms, a, b);
  return ms;
}

// Copy bandwidth: 1 GiB device to device, read + write counted. False when memory is short.
bool CopyGbPerS(cudaEvent_t a, cudaEvent_t b, double* gbs) {
  const size_t bytes = size_t{1} << 30;
  void *src = nullptr, *dst = nullptr;
  if (cudaMalloc(&src, bytes) != cudaSuccess || cudaMalloc(&dst, bytes) != cudaSuccess) {
    return false;
  }
  cudaMemset(src, 1, bytes);
  cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToDevice);
  cudaEventRecord(a);
  const int reps = 10;
  for (int i = 0; i < reps; ++i) cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToDevice);
  cudaEventRecord(b);
  cudaEventSynchronize(b);
  *gbs = 2.0 * bytes * reps / (TimeMs(a, b) / 1e3) / 1e9;
  cudaFree(src);
  cudaFree(dst);
  return true;
}

// cuBLAS GEMM rates for F32, F16 and BF16 inputs (8192 x 8192 weights, 4096 columns).
void GemmTflops(cublasHandle_t h, cudaEvent_t a, cudaEvent_t b, double tflops[3]) {
  const int m = 8192, k = 8192, nn = 4096;
  const cudaDataType types[3] = {CUDA_R_32F, CUDA_R_16F, CUDA_R_16BF};
  for (int t = 0; t < 3; ++t) {
    const size_t es = t == 0 ? 4 : 2;
    void *A, *B, *C;
    cudaMalloc(&A, size_t{m} * k * es);
    cudaMalloc(&B, size_t{k} * nn * es);
    cudaMalloc(&C, size_t{m} * nn * 4);
    cudaMemset(A, 0, size_t{m} * k * es);
    cudaMemset(B, 0, size_t{k} * nn * es);
    const float one = 1, zero = 0;
    cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, m, nn, k, &one, A, types[t], k, B, types[t], k, &zero,
                 C, CUDA_R_32F, m, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    cudaEventRecord(a);
    for (int i = 0; i < 5; ++i) {
      cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, m, nn, k, &one, A, types[t], k, B, types[t], k,
                   &zero, C, CUDA_R_32F, m, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    }
    cudaEventRecord(b);
    cudaEventSynchronize(b);
    tflops[t] = 2.0 * m * k * nn * 5 / (TimeMs(a, b) / 1e3) / 1e12;
    cudaFree(A);
    cudaFree(B);
    cudaFree(C);
  }
}

struct GemvType {
  int id;
  const char* name;
};

// The GEMV of one weight type and shape with 1 and 8 activation rows, appended to `gemv` as JSON
// items. False when memory is short.
bool GemvShape(cudaEvent_t a, cudaEvent_t b, GemvType t, int64_t rows, int64_t cols,
               std::string* gemv) {
  const bool q8 = t.id == kk::kQ8_0 || t.id == kk::kQ8_0R;
  const int64_t row_bytes = t.id == kk::kBF16 ? cols * 2 : cols / 32 * (q8 ? 34 : 18);
  int device = 0, sms = 1;
  cudaGetDevice(&device);
  cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
  void *w = nullptr, *x = nullptr, *out = nullptr;
  if (cudaMalloc(&w, rows * row_bytes) != cudaSuccess ||
      cudaMalloc(&x, 8 * cols * 4) != cudaSuccess ||
      cudaMalloc(&out, 8 * rows * 4) != cudaSuccess) {
    return false;
  }
  cudaMemset(w, 0x11, rows * row_bytes);  // small finite scales and weights
  cudaMemset(x, 0, 8 * cols * 4);
  const kk::DeviceWeight dw{t.id, rows, cols, row_bytes, w};
  for (int n : {1, 8}) {
    for (int i = 0; i < 3; ++i) {
      kk::Gemv(dw, static_cast<float*>(x), n, static_cast<float*>(out), 0);
    }
    const int reps = 100;
    cudaEventRecord(a);
    for (int i = 0; i < reps; ++i) {
      kk::Gemv(dw, static_cast<float*>(x), n, static_cast<float*>(out), 0);
    }
    cudaEventRecord(b);
    cudaEventSynchronize(b);
    const double us = TimeMs(a, b) * 1e3 / reps;
    char item[256];
    std::snprintf(item, sizeof(item),
                  "%s{\"type\": \"%s\", \"rows\": %lld, \"cols\": %lld, \"n\": %d, \"us\": %.2f, "
                  "\"weight_gb_per_s\": %.1f, \"split\": %d}",
                  gemv->empty() ? "" : ", ", t.name, static_cast<long long>(rows),
                  static_cast<long long>(cols), n, us, rows * row_bytes / (us * 1e-6) / 1e9,
                  kk::GemvSplit(&dw, 1, n, sms));
    *gemv += item;
  }
  cudaFree(w);
  cudaFree(x);
  cudaFree(out);
  return true;
}

// GEMV: 8192 x 2048 (gate/up), 2048 x 8192 (down) and 2048 x 2048 (Q, O), 1 and 8 activation
// rows; Q8_0 / Q4_0 in ggml's blocks and regrouped (the backend's default at load; the bytes are
// a fill pattern, so the layouts only differ in how they are read).
bool GemvRates(cudaEvent_t a, cudaEvent_t b, std::string* gemv) {
  for (const GemvType t :
       {GemvType{kk::kBF16, "bf16"}, GemvType{kk::kQ8_0, "q8_0"}, GemvType{kk::kQ8_0R, "q8_0r"},
        GemvType{kk::kQ4_0, "q4_0"}, GemvType{kk::kQ4_0R, "q4_0r"}}) {
    for (const auto& [rows, cols] :
         {std::pair<int64_t, int64_t>{8192, 2048}, {2048, 8192}, {2048, 2048}}) {
      if (!GemvShape(a, b, t, rows, cols, gemv)) return false;
    }
  }
  return true;
}

// LM head: 128256 x 2048, BF16 and regrouped Q8_0.
bool LmHeadRates(cudaEvent_t a, cudaEvent_t b, std::string* out) {
  for (const GemvType t : {GemvType{kk::kBF16, "bf16"}, GemvType{kk::kQ8_0R, "q8_0r"}}) {
    if (!GemvShape(a, b, t, 128256, 2048, out)) return false;
  }
  return true;
}

// Decode attention of one 1B layer (32 query heads over 8 KV heads of 64, half K/V cache) for
// `rows` sequences at `ctx` cached positions each, as K/V bytes read per second.
bool AttentionShape(cudaEvent_t a, cudaEvent_t b, int rows, int ctx, std::string* out) {
  const int heads = 32, kv_heads = 8, hd = 64, bs = 16, per_seq = ctx / bs;
  const int splits = (ctx + kk::kAttentionChunk - 1) / kk::kAttentionChunk;
  const size_t cache = size_t{2} * rows * per_seq * bs * kv_heads * hd;  // bytes of one cache
  std::vector<int32_t> ints(size_t{2} * rows + size_t{1} * rows * per_seq);
  for (int r = 0; r < rows; ++r) {
    ints[r] = ctx - 1;   // position
    ints[rows + r] = r;  // sequence
    for (int i = 0; i < per_seq; ++i) ints[2 * rows + r * per_seq + i] = r * per_seq + i;
  }
  void *kc = nullptr, *vc = nullptr, *q = nullptr, *o = nullptr, *scratch = nullptr,
       *dints = nullptr;
  if (cudaMalloc(&kc, cache) != cudaSuccess || cudaMalloc(&vc, cache) != cudaSuccess ||
      cudaMalloc(&q, size_t{4} * rows * heads * hd) != cudaSuccess ||
      cudaMalloc(&o, size_t{4} * rows * heads * hd) != cudaSuccess ||
      cudaMalloc(&scratch, size_t{4} * rows * heads * splits * (hd + 2)) != cudaSuccess ||
      cudaMalloc(&dints, ints.size() * 4) != cudaSuccess) {
    return false;
  }
  cudaMemset(kc, 0, cache);
  cudaMemset(vc, 0, cache);
  cudaMemset(q, 0, size_t{4} * rows * heads * hd);
  cudaMemcpy(dints, ints.data(), ints.size() * 4, cudaMemcpyHostToDevice);
  const int32_t* di = static_cast<const int32_t*>(dints);
  const kk::DeviceLayout l{rows, di, di + rows, di + 2 * rows, per_seq, bs};
  auto run = [&] {
    kk::Attention(static_cast<const float*>(q), kc, vc, true, l, nullptr, rows, heads, kv_heads, hd,
                  0.125f, splits, static_cast<float*>(scratch), static_cast<float*>(o), 0);
  };
  for (int i = 0; i < 3; ++i) run();
  const int reps = 50;
  cudaEventRecord(a);
  for (int i = 0; i < reps; ++i) run();
  cudaEventRecord(b);
  cudaEventSynchronize(b);
  const double us = TimeMs(a, b) * 1e3 / reps;
  char item[192];
  std::snprintf(item, sizeof(item),
                "%s{\"rows\": %d, \"context\": %d, \"us\": %.2f, \"kv_gb_per_s\": %.1f}",
                out->empty() ? "" : ", ", rows, ctx, us, 2.0 * cache / (us * 1e-6) / 1e9);
  *out += item;
  for (void* p : {kc, vc, q, o, scratch, dints}) cudaFree(p);
  return true;
}

}  // namespace

int main() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) {
    std::printf("{\"device\": \"none\"}\n");
    return 0;
  }
  cudaDeviceProp prop;
  cudaGetDeviceProperties(&prop, 0);
  cudaEvent_t a, b;
  cudaEventCreate(&a);
  cudaEventCreate(&b);
  double copy_gbs = 0;
  if (!CopyGbPerS(a, b, &copy_gbs)) return 1;

  cublasHandle_t h;
  cublasCreate(&h);
  double tflops[3] = {0, 0, 0};
  GemmTflops(h, a, b, tflops);
  std::string gemv, lm_head, attention;
  if (!GemvRates(a, b, &gemv) || !LmHeadRates(a, b, &lm_head)) return 1;
  for (int ctx : {512, 4096}) {
    for (int rows : {1, 8}) {
      if (!AttentionShape(a, b, rows, ctx, &attention)) return 1;
    }
  }
  const cudaError_t err = cudaGetLastError();
  std::printf(
      "{\"device\": \"%s\", \"memory_gib\": %.1f, \"copy_gb_per_s\": %.1f, "
      "\"gemm_f32_tflops\": %.1f, \"gemm_f16_tflops\": %.1f, \"gemm_bf16_tflops\": %.1f, "
      "\"gemv\": [%s], \"lm_head\": [%s], \"attention\": [%s], \"cuda_error\": \"%s\"}\n",
      prop.name, prop.totalGlobalMem / 1073741824.0, copy_gbs, tflops[0], tflops[1], tflops[2],
      gemv.c_str(), lm_head.c_str(), attention.c_str(), cudaGetErrorString(err));
  cublasDestroy(h);
  return 0;
}
