// Backend: the ops the transformer forward pass needs, over buffers the backend owns.
//
// All float pointers passed to ops point into backend memory (host memory for the CPU backend,
// device memory for CUDA); host data enters through CopyToBackend. Ops run in call order on the
// backend's single stream; Synchronize waits for them. Shapes are row-major, innermost last:
// "[n, d]" means n rows of d floats. A backend instance is used by one thread at a time (the
// engine thread).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "chorus/gguf/ggml_types.h"
#include "chorus/gguf/gguf.h"
#include "chorus/sampling/sampler.h"

namespace chorus {

// A weight matrix [rows, cols] (cols = input features, GGUF ne[0]) in backend memory.
struct WeightTensor {
  // ggml's type of the file, or a layout of the backend's own that it chose at load (the CUDA
  // backend's regrouped Q8_0 / Q4_0): only the backend that loaded a weight reads it.
  GgmlType type = GgmlType::kF32;
  int64_t rows = 0;
  int64_t cols = 0;
  const void* data = nullptr;  // owned by the backend; valid while the backend lives
  int64_t row_bytes = 0;
};

enum class RopeStyle {
  kAdjacentPairs,  // rotate (2i, 2i+1): GGUF "llama"
  kHalves,         // rotate (i, i + d/2): "qwen2" (NeoX)
};

// How positions become rotation angles. Pair i (i < rope_dim / 2) of a token at position p
// rotates by p * freq_scale * freq_base^(-2i / rope_dim) / freq_factors[i]:
//   freq_scale    linear rope scaling (1 / {arch}.rope.scaling.factor), 1 when unscaled;
//   freq_factors  Llama 3.x `rope_freqs.weight` [rope_dim / 2] F32 in backend memory, or
//                 nullptr (all 1).
struct RopeConfig {
  int rope_dim = 0;
  float freq_base = 10000.0f;
  float freq_scale = 1.0f;
  const float* freq_factors = nullptr;
  RopeStyle style = RopeStyle::kAdjacentPairs;
};

// Where each token of a batch reads and writes its sequence's KV cache.
struct AttentionLayout {
  int num_tokens = 0;
  const int32_t* positions = nullptr;     // [num_tokens] host, position in its sequence
  const int32_t* seq_of_token = nullptr;  // [num_tokens] host, index of its sequence
  const int32_t* block_tables = nullptr;  // [num_seqs, max_blocks_per_seq] host
  int max_blocks_per_seq = 0;
  int block_size = 0;  // tokens per KV block
};

// Backend-owned memory; freed by its destructor.
class BackendBuffer {
 public:
  virtual ~BackendBuffer() = default;
  virtual void* data() = 0;
  virtual size_t size() const = 0;
  float* f32() { return static_cast<float*>(data()); }
};

class Communicator;  // chorus/backends/communicator.h

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string_view name() const = 0;

  virtual absl::StatusOr<std::unique_ptr<BackendBuffer>> Alloc(size_t bytes) = 0;
  // Makes a GGUF tensor (2-D, or 1-D as one row) usable by ops. The CPU backend points into the
  // file mapping (`tensor.data`), so the GgufFile must outlive the backend's use of the weight.
  virtual absl::StatusOr<WeightTensor> LoadWeight(const GgufTensorInfo& tensor) = 0;
  virtual void CopyToBackend(const void* host, void* dst, size_t bytes) = 0;
  virtual void CopyToHost(const void* src, void* host, size_t bytes) = 0;
  // Backend-to-backend copy (both pointers in backend memory).
  virtual void Copy(void* dst, const void* src, size_t bytes) = 0;
  virtual void Synchronize() = 0;
  // The first error an op hit since the last call (device backends: launch or CUDA errors),
  // then cleared. Ops themselves return nothing so that a forward pass stays a plain sequence.
  virtual absl::Status TakeError() { return absl::OkStatus(); }
  // data[count] (this backend's memory) := the sum over the ranks of `comm`, after this backend's
  // pending ops and before later ones. Default: wait for the ops, then the host-side collective
  // (Communicator::AllReduceSum); the CUDA backend enqueues a stream collective (NCCL) in order
  // with its ops instead, so the forward never waits on the host for it.
  virtual absl::Status AllReduceSum(Communicator& comm, float* data, int64_t count);

  // Called once per forward before any op, with the host arrays the ops of this forward will
  // pass (tokens, positions, layout, logit rows): a device backend uploads them once here.
  virtual void BeginForward(const int32_t* tokens, const AttentionLayout& layout,
                            const int32_t* logit_rows, int num_logit_rows) {}

  // out[i, :] = row tokens[i] of table (dequantized). tokens: host [n].
  virtual void Embed(const WeightTensor& table, const int32_t* tokens, int n, float* out) = 0;
  // out[n, d] = x / rms(x) * w (w: [d] F32 weight).
  virtual void RmsNorm(const float* x, const WeightTensor& w, int n, int d, float eps,
                       float* out) = 0;
  // out[n, w.rows] = x[n, w.cols] * w^T
  virtual void MatMul(const WeightTensor& w, const float* x, int n, float* out) = 0;
  // x[n, d] += bias[d]
  virtual void AddBias(float* x, const WeightTensor& bias, int n) = 0;
  // Rotates the first rope.rope_dim dims of each head of x[n, heads * head_dim] in place;
  // positions: host [n].
  virtual void Rope(float* x, const int32_t* positions, int n, int heads, int head_dim,
                    const RopeConfig& rope) = 0;
  // Bytes per value of the K/V caches this backend's KvWrite and Attention use: 4 (F32) unless
  // the backend stores them narrower (CUDA: F16 by default). The cache pointers below are typed
  // float* but point at values of this width.
  virtual int KvBytesPerValue() const { return 4; }
  // Writes k, v [n, kv_dim] into the layer's caches [blocks, block_size, kv_dim] at each
  // token's (block, offset) per the layout.
  virtual void KvWrite(const float* k, const float* v, const AttentionLayout& layout, int kv_dim,
                       float* k_cache, float* v_cache) = 0;
  // Causal attention of q [n, heads * head_dim] over positions 0..pos of each token's
  // sequence; out [n, heads * head_dim]. Query head h uses KV head h / (heads / kv_heads).
  virtual void Attention(const float* q, const float* k_cache, const float* v_cache,
                         const AttentionLayout& layout, int heads, int kv_heads, int head_dim,
                         float scale, float* out) = 0;
  // out[n, d] = silu(gate) * up
  virtual void SwiGlu(const float* gate, const float* up, int n, int d, float* out) = 0;
  // x[n, d] += y
  virtual void Add(float* x, const float* y, int64_t count) = 0;
  // Samples one token per entry of `rows` (sampling/sampler.h: RowSampling, the rule after
  // penalties, uniform numbers drawn by the sequences' own RNGs) from logits [num_rows, vocab] in
  // backend memory; entries may share a logits row. The logits never travel to the host.
  // INVALID_ARGUMENT for a row outside [0, num_rows).
  virtual absl::Status SampleRows(const float* logits, int num_rows, int vocab,
                                  const std::vector<RowSampling>& rows,
                                  std::vector<SampledToken>* out) = 0;
  // out[m, d] = x[rows[j], :] (rows: host [m])
  virtual void GatherRows(const float* x, const int32_t* rows, int m, int d, float* out) = 0;
};

}  // namespace chorus
