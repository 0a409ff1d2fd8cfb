// CUDA implementation of the Backend interface (see include/chorus/backends/cuda_backend.h).
#include "chorus/backends/cuda_backend.h"

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "chorus/core/str_cat.h"
#include "kernels.h"

namespace chorus {
namespace {

namespace k = kernels;

class DeviceBuffer : public BackendBuffer {
 public:
  DeviceBuffer(void* p, size_t n) : p_(p), n_(n) {}
  ~DeviceBuffer() override { cudaFree(p_); }
  void* data() override { return p_; }
  size_t size() const override { return n_; }

 private:
  void* p_;
  size_t n_;
};

// A grow-only device scratch area.
struct Scratch {
  void* p = nullptr;
  size_t n = 0;
  cudaError_t Ensure(size_t bytes) {
    if (bytes <= n) return cudaSuccess;
    if (p) cudaFree(p);
    p = nullptr;
    n = 0;
    cudaError_t e = cudaMalloc(&p, bytes);
    if (e == cudaSuccess) n = bytes;
    return e;
  }
  ~Scratch() {
    if (p) cudaFree(p);
  }
};

k::DeviceWeight Dev(const WeightTensor& w) {
  return {static_cast<int>(w.type), w.rows, w.cols, w.row_bytes, w.data};
}

class CudaBackend : public Backend {
 public:
  CudaBackend(int device, cudaStream_t stream, cublasHandle_t blas)
      : device_(device), stream_(stream), blas_(blas) {}
  ~CudaBackend() override {
    cudaStreamSynchronize(stream_);
    for (void* p : weights_) cudaFree(p);
    cublasDestroy(blas_);
    cudaStreamDestroy(stream_);
  }
  std::string_view name() const override { return "cuda"; }

  absl::StatusOr<std::unique_ptr<BackendBuffer>> Alloc(size_t bytes) override {
    void* p = nullptr;
    if (cudaMalloc(&p, std::max<size_t>(bytes, 16)) != cudaSuccess) {
      cudaGetLastError();
      return absl::ResourceExhaustedError(StrCat("cuda: out of device memory allocating ", bytes, " bytes"));
    }
    return std::unique_ptr<BackendBuffer>(new DeviceBuffer(p, bytes));
  }

  absl::StatusOr<WeightTensor> LoadWeight(const GgufTensorInfo& t) override {
    auto traits = GetTypeTraits(static_cast<uint32_t>(t.type));
    if (!traits || !traits->supported || t.n_dims > 2) {
      return absl::FailedPreconditionError(StrCat("tensor '", t.name, "' has type ", TypeName(t.type),
                                                  " or shape the cuda backend does not support"));
    }
    void* p = nullptr;
    if (cudaMalloc(&p, static_cast<size_t>(t.num_bytes)) != cudaSuccess) {
      cudaGetLastError();
      return absl::ResourceExhaustedError(StrCat("cuda: out of device memory loading tensor '", t.name,
                                                 "' (", t.num_bytes, " bytes)"));
    }
    weights_.push_back(p);
    if (cudaMemcpy(p, t.data, static_cast<size_t>(t.num_bytes), cudaMemcpyHostToDevice) != cudaSuccess) {
      return absl::InternalError(StrCat("cuda: copying tensor '", t.name, "' failed"));
    }
    WeightTensor w;
    w.type = t.type;
    w.cols = t.ne[0];
    w.rows = t.n_dims == 2 ? t.ne[1] : 1;
    w.row_bytes = w.cols / traits->block_size * traits->type_size;
    w.data = p;
    return w;
  }

  void CopyToBackend(const void* host, void* dst, size_t bytes) override {
    Check(cudaMemcpyAsync(dst, host, bytes, cudaMemcpyHostToDevice, stream_));
    Check(cudaStreamSynchronize(stream_));  // the host buffer may go away after the call
  }
  void CopyToHost(const void* src, void* host, size_t bytes) override {
    Check(cudaMemcpyAsync(host, src, bytes, cudaMemcpyDeviceToHost, stream_));
    Check(cudaStreamSynchronize(stream_));
  }
  void Copy(void* dst, const void* src, size_t bytes) override {
    Check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream_));
  }
  void Synchronize() override { Check(cudaStreamSynchronize(stream_)); }
  absl::Status TakeError() override {
    absl::Status s = error_;
    error_ = absl::OkStatus();
    return s;
  }

  void BeginForward(const int32_t* tokens, const AttentionLayout& l, const int32_t* logit_rows,
                    int num_logit_rows) override {
    int num_seqs = 0, max_pos = 0;
    for (int t = 0; t < l.num_tokens; ++t) {
      num_seqs = std::max(num_seqs, l.seq_of_token[t] + 1);
      max_pos = std::max(max_pos, l.positions[t]);
    }
    const size_t n = static_cast<size_t>(l.num_tokens);
    const size_t tables = static_cast<size_t>(num_seqs) * l.max_blocks_per_seq;
    const size_t ints = 3 * n + tables + static_cast<size_t>(num_logit_rows);
    host_.resize(ints);
    std::memcpy(host_.data(), tokens, n * 4);
    std::memcpy(host_.data() + n, l.positions, n * 4);
    std::memcpy(host_.data() + 2 * n, l.seq_of_token, n * 4);
    std::memcpy(host_.data() + 3 * n, l.block_tables, tables * 4);
    if (num_logit_rows > 0) std::memcpy(host_.data() + 3 * n + tables, logit_rows, num_logit_rows * 4);
    if (!Check(ints_.Ensure(ints * 4))) return;
    Check(cudaMemcpyAsync(ints_.p, host_.data(), ints * 4, cudaMemcpyHostToDevice, stream_));
    Check(cudaStreamSynchronize(stream_));
    auto* d = static_cast<int32_t*>(ints_.p);
    host_tokens_ = tokens;
    host_positions_ = l.positions;
    host_rows_ = logit_rows;
    dev_tokens_ = d;
    layout_ = {l.num_tokens, d + n, d + 2 * n, d + 3 * n, l.max_blocks_per_seq, l.block_size};
    dev_rows_ = d + 3 * n + tables;
    splits_ = max_pos / k::kAttentionChunk + 1;
  }

  void Embed(const WeightTensor& table, const int32_t* tokens, int n, float* out) override {
    Check(k::Embed(Dev(table), Device(tokens, host_tokens_, dev_tokens_, n), n, out, stream_));
  }
  void RmsNorm(const float* x, const WeightTensor& w, int n, int d, float eps, float* out) override {
    Check(k::RmsNorm(x, static_cast<const float*>(w.data), n, d, eps, out, stream_));
  }
  void MatMul(const WeightTensor& w, const float* x, int n, float* out) override {
    if (n <= k::kMaxGemvTokens) {
      Check(k::Gemv(Dev(w), x, n, out, stream_));
      return;
    }
    Gemm(w, x, n, out);
  }
  void AddBias(float* x, const WeightTensor& bias, int n) override {
    Check(k::AddBias(x, static_cast<const float*>(bias.data), n, static_cast<int>(bias.cols), stream_));
  }
  void Rope(float* x, const int32_t* positions, int n, int heads, int head_dim, int rope_dim,
            float freq_base, RopeStyle style) override {
    Check(k::Rope(x, Device(positions, host_positions_, layout_.positions, n), n, heads, head_dim, rope_dim,
                  freq_base, style == RopeStyle::kHalves, stream_));
  }
  void KvWrite(const float* kk, const float* v, const AttentionLayout& layout, int kv_dim,
               float* k_cache, float* v_cache) override {
    if (!LayoutReady(layout)) return;
    Check(k::KvWrite(kk, v, layout_, kv_dim, k_cache, v_cache, stream_));
  }
  void Attention(const float* q, const float* k_cache, const float* v_cache,
                 const AttentionLayout& layout, int heads, int kv_heads, int head_dim, float scale,
                 float* out) override {
    if (!LayoutReady(layout)) return;
    const size_t bytes = static_cast<size_t>(layout.num_tokens) * heads * splits_ * (head_dim + 2) * 4;
    if (!Check(attn_.Ensure(bytes))) return;
    Check(k::Attention(q, k_cache, v_cache, layout_, heads, kv_heads, head_dim, scale, splits_,
                       static_cast<float*>(attn_.p), out, stream_));
  }
  void SwiGlu(const float* gate, const float* up, int n, int d, float* out) override {
    Check(k::SwiGlu(gate, up, static_cast<int64_t>(n) * d, out, stream_));
  }
  void Add(float* x, const float* y, int64_t count) override { Check(k::Add(x, y, count, stream_)); }
  absl::Status SampleRows(const float* logits, int rows, int vocab, const std::vector<DeviceSampleParams>& params,
                          std::vector<int32_t>* tokens, std::vector<float>* logprobs) override {
    if (static_cast<int>(params.size()) != rows) return absl::InvalidArgumentError("cuda: one sampling row per logits row");
    std::vector<k::SamplingRow> host(rows);
    for (int r = 0; r < rows; ++r) {
      host[r] = {params[r].temperature, params[r].top_k, params[r].top_p, params[r].min_p, params[r].uniform};
    }
    const size_t pbytes = rows * sizeof(k::SamplingRow), obytes = rows * 8;
    if (!Check(sample_.Ensure(pbytes + obytes))) return TakeError();
    auto* dparams = static_cast<k::SamplingRow*>(sample_.p);
    auto* dtokens = reinterpret_cast<int32_t*>(static_cast<char*>(sample_.p) + pbytes);
    auto* dlogp = reinterpret_cast<float*>(dtokens + rows);
    Check(cudaMemcpyAsync(dparams, host.data(), pbytes, cudaMemcpyHostToDevice, stream_));
    Check(k::SampleRows(logits, rows, vocab, dparams, dtokens, dlogp, stream_));
    tokens->resize(rows);
    logprobs->resize(rows);
    Check(cudaMemcpyAsync(tokens->data(), dtokens, rows * 4, cudaMemcpyDeviceToHost, stream_));
    Check(cudaMemcpyAsync(logprobs->data(), dlogp, rows * 4, cudaMemcpyDeviceToHost, stream_));
    Check(cudaStreamSynchronize(stream_));
    return TakeError();
  }
  void GatherRows(const float* x, const int32_t* rows, int m, int d, float* out) override {
    Check(k::GatherRows(x, Device(rows, host_rows_, dev_rows_, m), m, d, out, stream_));
  }

 private:
  bool Check(cudaError_t e) {
    if (e == cudaSuccess) return true;
    if (error_.ok()) error_ = absl::InternalError(StrCat("cuda: ", cudaGetErrorString(e)));
    return false;
  }
  bool Check(cublasStatus_t s) {
    if (s == CUBLAS_STATUS_SUCCESS) return true;
    if (error_.ok()) error_ = absl::InternalError(StrCat("cublas: status ", static_cast<int>(s)));
    return false;
  }
  // The device copy of a host array uploaded by BeginForward, or a fresh upload.
  const int32_t* Device(const int32_t* host, const int32_t* cached_host, const int32_t* cached_dev, int n) {
    if (host == cached_host && cached_dev != nullptr) return cached_dev;
    if (!Check(extra_.Ensure(static_cast<size_t>(n) * 4))) return nullptr;
    Check(cudaMemcpyAsync(extra_.p, host, static_cast<size_t>(n) * 4, cudaMemcpyHostToDevice, stream_));
    Check(cudaStreamSynchronize(stream_));
    return static_cast<const int32_t*>(extra_.p);
  }
  bool LayoutReady(const AttentionLayout& l) {
    if (l.positions == host_positions_ && l.num_tokens == layout_.num_tokens) return true;
    if (error_.ok()) error_ = absl::InternalError("cuda: attention layout was not prepared by BeginForward");
    return false;
  }

  // out[n, rows] = x[n, cols] * W^T with cuBLAS (column-major view: W is cols x rows).
  void Gemm(const WeightTensor& w, const float* x, int n, float* out) {
    const float one = 1.0f, zero = 0.0f;
    const int m = static_cast<int>(w.rows), kk = static_cast<int>(w.cols);
    if (w.type == GgmlType::kF32) {
      Check(cublasGemmEx(blas_, CUBLAS_OP_T, CUBLAS_OP_N, m, n, kk, &one, w.data, CUDA_R_32F, kk, x,
                         CUDA_R_32F, kk, &zero, out, CUDA_R_32F, m, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
      return;
    }
    const bool bf16 = w.type == GgmlType::kBF16;
    const size_t act = static_cast<size_t>(n) * kk * 2;
    if (!Check(act_.Ensure(act))) return;
    Check(bf16 ? k::FloatToBf16(x, static_cast<int64_t>(n) * kk, act_.p, stream_)
               : k::FloatToHalf(x, static_cast<int64_t>(n) * kk, act_.p, stream_));
    const void* a = w.data;
    if (w.type == GgmlType::kQ8_0 || w.type == GgmlType::kQ4_0) {
      // Dequantize-then-GEMM for prefill with quantized weights.
      if (!Check(deq_.Ensure(static_cast<size_t>(m) * kk * 2))) return;
      Check(k::DequantizeToHalf(Dev(w), deq_.p, stream_));
      a = deq_.p;
    }
    const cudaDataType t = bf16 ? CUDA_R_16BF : CUDA_R_16F;
    Check(cublasGemmEx(blas_, CUBLAS_OP_T, CUBLAS_OP_N, m, n, kk, &one, a, t, kk, act_.p, t, kk, &zero,
                       out, CUDA_R_32F, m, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  }

  int device_;
  cudaStream_t stream_;
  cublasHandle_t blas_;
  std::vector<void*> weights_;
  absl::Status error_;
  Scratch ints_, extra_, attn_, act_, deq_, sample_;
  std::vector<int32_t> host_;
  const int32_t* host_tokens_ = nullptr;
  const int32_t* host_positions_ = nullptr;
  const int32_t* host_rows_ = nullptr;
  const int32_t* dev_tokens_ = nullptr;
  const int32_t* dev_rows_ = nullptr;
  k::DeviceLayout layout_{};
  int splits_ = 1;
};

}  // namespace

int CudaDeviceCount() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // no driver (cudaErrorInsufficientDriver) or no device: none usable
    return 0;
  }
  return n;
}

absl::StatusOr<std::unique_ptr<Backend>> CreateCudaBackend(int device) {
  const int count = CudaDeviceCount();
  if (device < 0 || device >= count) {
    return absl::FailedPreconditionError(StrCat("cuda: device ", device, " not available (", count, " devices)"));
  }
  if (cudaSetDevice(device) != cudaSuccess) return absl::InternalError("cuda: cudaSetDevice failed");
  cudaStream_t stream;
  if (cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking) != cudaSuccess) {
    return absl::InternalError("cuda: cannot create a stream");
  }
  cublasHandle_t blas;
  if (cublasCreate(&blas) != CUBLAS_STATUS_SUCCESS) {
    cudaStreamDestroy(stream);
    return absl::InternalError("cublas: cannot create a handle");
  }
  cublasSetStream(blas, stream);
  cublasSetMathMode(blas, CUBLAS_DEFAULT_MATH);  // no TF32: F32 weights stay F32
  return std::unique_ptr<Backend>(new CudaBackend(device, stream, blas));
}

}  // namespace chorus
