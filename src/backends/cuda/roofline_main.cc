// chorus-bench-cuda: the card's roofline numbers for docs/PERFORMANCE.md: device-to-device copy
// bandwidth and cuBLAS GEMM rates (F32, F16 and BF16 inputs with F32 accumulation).
// Also the decode GEMV kernel alone (kernels/gemv.cu) on Llama-3.2-1B FFN shapes, as weight
// bytes per second: what the kernel reaches before launch gaps and the other ops count.
// Prints one JSON line. Exits 0 with {"device": "none"} when no GPU is present.
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdio>
#include <initializer_list>
#include <string>
#include <utility>

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
  const int64_t row_bytes =
      t.id == kk::kBF16 ? cols * 2 : cols / 32 * (t.id == kk::kQ8_0 ? 34 : 18);
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
                  "\"weight_gb_per_s\": %.1f}",
                  gemv->empty() ? "" : ", ", t.name, static_cast<long long>(rows),
                  static_cast<long long>(cols), n, us, rows * row_bytes / (us * 1e-6) / 1e9);
    *gemv += item;
  }
  cudaFree(w);
  cudaFree(x);
  cudaFree(out);
  return true;
}

// GEMV: 8192 x 2048 (gate/up) and 2048 x 8192 (down), 1 and 8 activation rows.
bool GemvRates(cudaEvent_t a, cudaEvent_t b, std::string* gemv) {
  for (const GemvType t :
       {GemvType{kk::kBF16, "bf16"}, GemvType{kk::kQ8_0, "q8_0"}, GemvType{kk::kQ4_0, "q4_0"}}) {
    for (const auto& [rows, cols] : {std::pair<int64_t, int64_t>{8192, 2048}, {2048, 8192}}) {
      if (!GemvShape(a, b, t, rows, cols, gemv)) return false;
    }
  }
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
  std::string gemv;
  if (!GemvRates(a, b, &gemv)) return 1;
  const cudaError_t err = cudaGetLastError();
  std::printf(
      "{\"device\": \"%s\", \"memory_gib\": %.1f, \"copy_gb_per_s\": %.1f, "
      "\"gemm_f32_tflops\": %.1f, \"gemm_f16_tflops\": %.1f, \"gemm_bf16_tflops\": %.1f, "
      "\"gemv\": [%s], \"cuda_error\": \"%s\"}\n",
      prop.name, prop.totalGlobalMem / 1073741824.0, copy_gbs, tflops[0], tflops[1], tflops[2],
      gemv.c_str(), cudaGetErrorString(err));
  cublasDestroy(h);
  return 0;
}
