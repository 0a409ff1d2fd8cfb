// Internal to the CUDA backend (src/backends/cuda/): the backend class, shared by its files
//   cuda_backend.cc  lifetime, memory, copies, errors, scratch areas, graph capture;
//   cuda_inputs.cc   the forward's integer inputs and attention plan (one upload), sampling;
//   cuda_ops.cc      op recording, with the fusion rules of chorus/backends/fusion.h;
//   cuda_gemm.cc     cuBLAS GEMMs and the cache of dequantized weights;
//   cuda_factory.cc  device discovery, options and construction.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "chorus/backends/backend.h"
#include "chorus/backends/communicator.h"
#include "chorus/backends/cuda_backend.h"
#include "chorus/backends/device_plan.h"
#include "chorus/backends/fusion.h"
#include "kernels.h"

namespace chorus::cuda_internal {

namespace k = ::chorus::kernels;

static_assert(kMaxFusedGemvs == k::kMaxGemvGroup);

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

inline k::DeviceWeight Dev(const WeightTensor& w) {
  return {static_cast<int>(w.type), w.rows, w.cols, w.row_bytes, w.data};
}
inline k::DeviceWeight Dev(const FusedWeight& w) {
  return {w.type, w.rows, w.cols, w.row_bytes, w.data};
}
inline FusedWeight Fused(const WeightTensor& w) {
  return {static_cast<int>(w.type), w.rows, w.cols, w.row_bytes, w.data};
}
inline k::RopeArgs Dev(const RopeParams& r) {
  return {r.rope_dim, r.freq_base, r.freq_scale, r.freq_factors, r.halves};
}

// Op ids, the first word of each op's signature on the tape.
enum Op : uint64_t {
  kOpAddRmsNorm = 100,
  kOpRopeKvWrite,
  kOpGemvSwiGlu,
  kOpAllReduce,
  kOpEmbed = 1,
  kOpRmsNorm,
  kOpGemv,
  kOpGemm,
  kOpBias,
  kOpRope,
  kOpKvWrite,
  kOpAttention,
  kOpSwiGlu,
  kOpAdd,
  kOpGather
};

template <typename T>
uint64_t W(T v) {
  return OpTape::Word(v);
}

class CudaBackend : public Backend, public GraphDriver {
 public:
  CudaBackend(int device, cudaStream_t stream, cublasHandle_t blas, void* blas_workspace,
              const CudaBackendOptions& options);
  ~CudaBackend() override;
  std::string_view name() const override { return "cuda"; }
  int KvBytesPerValue() const override { return options_.kv_f16 ? 2 : 4; }
  CudaGraphStats graph_stats() const;

  // Memory and copies (cuda_backend.cc).
  absl::StatusOr<std::unique_ptr<BackendBuffer>> Alloc(size_t bytes) override;
  absl::StatusOr<WeightTensor> LoadWeight(const GgufTensorInfo& t) override;
  void CopyToBackend(const void* host, void* dst, size_t bytes) override;
  void CopyToHost(const void* src, void* host, size_t bytes) override;
  void Copy(void* dst, const void* src, size_t bytes) override;
  void Synchronize() override;
  absl::Status TakeError() override;
  // Tensor parallelism: a stream collective (NCCL) is recorded as an op, in order with the
  // others and inside captured graphs; a host-side communicator takes the default path.
  absl::Status AllReduceSum(Communicator& comm, float* data, int64_t count) override;

  // Inputs and sampling (cuda_inputs.cc).
  void BeginForward(const int32_t* tokens, const AttentionLayout& l, const int32_t* logit_rows,
                    int num_logit_rows) override;
  absl::Status SampleRows(const float* logits, int num_rows, int vocab,
                          const std::vector<RowSampling>& rows,
                          std::vector<SampledToken>* out) override;

  // Ops (cuda_ops.cc).
  void Embed(const WeightTensor& table, const int32_t* tokens, int n, float* out) override;
  void RmsNorm(const float* x, const WeightTensor& w, int n, int d, float eps, float* out) override;
  void MatMul(const WeightTensor& w, const float* x, int n, float* out) override;
  void AddBias(float* x, const WeightTensor& bias, int n) override;
  void Rope(float* x, const int32_t* positions, int n, int heads, int head_dim,
            const RopeConfig& rope) override;
  void KvWrite(const float* kk, const float* v, const AttentionLayout& layout, int kv_dim,
               float* k_cache, float* v_cache) override;
  void Attention(const float* q, const float* k_cache, const float* v_cache,
                 const AttentionLayout& layout, int heads, int kv_heads, int head_dim, float scale,
                 float* out) override;
  void SwiGlu(const float* gate, const float* up, int n, int d, float* out) override;
  void Add(float* x, const float* y, int64_t count) override;
  void GatherRows(const float* x, const int32_t* rows, int m, int d, float* out) override;

  // GraphDriver: stream capture on the backend's stream (cuda_backend.cc).
  bool BeginCapture() override;
  void* EndCapture() override;
  bool Launch(void* graph) override;
  void Destroy(void* graph) override;

 private:
  // Offsets (in int32 values) of the parts of the packed forward inputs.
  struct InputOffsets {
    size_t rows = 0, tiles = 0, singles = 0, total = 0;
  };

  // Every thread that drives this backend (the creating thread, the engine thread, a tensor-
  // parallel rank's thread) must address this backend's GPU: the CUDA current device is
  // per thread. Called wherever CUDA is touched outside the recorded ops, and before they run.
  void Use() const { cudaSetDevice(device_); }
  void Flush() {
    Use();
    PushStaged();
    tape_.Flush();
  }
  // Records an op (after the staged GEMV group, which comes first in program order).
  void PushOp(std::initializer_list<uint64_t> signature, std::function<void()> op) {
    PushStaged();
    tape_.Push(signature, std::move(op));
  }
  // Records whatever is staged (at most one of a GEMV group, an add, a RoPE).
  void PushStaged();
  // Records the staged GEMV group, if any, as one grouped launch.
  void PushStagedGemv();
  bool Check(cudaError_t e);
  bool Check(cublasStatus_t s);
  // Makes a scratch area at least `bytes` long (powers of two, so it settles quickly). Growing
  // frees the old area: pending ops run first, and graphs that pointed into it are dropped.
  bool Grow(Scratch& s, size_t bytes);
  // The device copy of a host array uploaded by BeginForward, or a fresh upload (pending ops run
  // first: they may still read the previous upload).
  const int32_t* Device(const int32_t* host, const int32_t* cached_host, const int32_t* cached_dev,
                        int n);
  bool LayoutReady(const AttentionLayout& l);
  // The attention plan of a forward (query tiles, split counts); graph: bucket the splits.
  void PlanAttention(const AttentionLayout& l, bool graph);
  // Packs the forward's integer inputs into host_ (block table rows `stride` apart).
  InputOffsets PackInputs(const int32_t* tokens, const AttentionLayout& l, int stride,
                          const int32_t* logit_rows, int num_logit_rows);
  // A persistent half-precision copy of a quantized weight for GEMMs, while the cache's share of
  // device memory lasts (free memory at first use minus a reserve); null when it does not fit.
  const void* Dequantized(const WeightTensor& w);
  // out[n, rows] = x[n, cols] * W^T with cuBLAS (column-major view: W is cols x rows). 16-bit and
  // quantized weights multiply half / bfloat16 activations with F32 accumulation; quantized
  // weights use their cached half copy, or are dequantized into scratch for this call.
  void Gemm(const WeightTensor& w, const float* x, int n, float* out);

  int device_;
  cudaStream_t stream_;
  cublasHandle_t blas_;
  void* blas_workspace_;
  CudaBackendOptions options_;
  std::vector<void*> weights_;
  absl::Status error_, saved_error_;
  Scratch ints_, extra_, attn_, act_, deq_, sample_;
  std::unordered_map<const void*, void*> dequantized_;
  int64_t dequantized_bytes_ = 0, dequant_budget_ = -1;
  std::vector<int32_t> host_, sampled_;
  const int32_t* host_tokens_ = nullptr;
  const int32_t* host_positions_ = nullptr;
  const int32_t* host_rows_ = nullptr;
  const int32_t* dev_tokens_ = nullptr;
  const int32_t* dev_rows_ = nullptr;
  const int32_t* dev_tiles_ = nullptr;
  const int32_t* dev_singles_ = nullptr;
  k::DeviceLayout layout_{};
  AttentionPlan plan_;
  int splits_all_ = 1, splits_singles_ = 1;
  // Ops recorded but not yet on the tape: they may still be joined by the next op (fusion.h).
  StagedGemv staged_;
  StagedAdd staged_add_;
  StagedRope staged_rope_;
  OpTape tape_;  // last: destroyed first, while the driver above is intact
};

}  // namespace chorus::cuda_internal
