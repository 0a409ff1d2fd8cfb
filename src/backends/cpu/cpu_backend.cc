#include "chorus/backends/cpu_backend.h"

#include <sys/mman.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <unordered_map>
#include <vector>

#include "chorus/core/str_cat.h"
#include "chorus/core/thread_pool.h"
#include "src/backends/cpu/cpu_attention.h"
#include "src/backends/cpu/cpu_gemm_f32.h"
#include "src/backends/cpu/cpu_int8_packed.h"

namespace chorus {
namespace {

// Angle per position of rotary pair i (backend.h: RopeConfig).
float RopeFrequency(const RopeConfig& r, int i) {
  float f =
      1.0f / std::pow(r.freq_base, static_cast<float>(2 * i) / static_cast<float>(r.rope_dim));
  if (r.freq_scale != 1.0f) f *= r.freq_scale;
  if (r.freq_factors != nullptr) f /= r.freq_factors[i];
  return f;
}

// Host memory for weights copies, the KV cache and activations. Buffers of 2 MiB or more are
// 2 MiB aligned and advised as transparent huge pages: the decode streams over gigabytes, and
// with 4 KiB pages its TLB misses (costly page walks under virtualization) made the same
// matmul run 1x-6x slower from one process to the next on the development VM.
char* AllocHost(size_t bytes) {
  constexpr size_t kHuge = size_t{2} << 20;
  if (bytes < kHuge) return static_cast<char*>(std::aligned_alloc(64, (bytes + 63) / 64 * 64 + 64));
  const size_t rounded = (bytes + kHuge - 1) / kHuge * kHuge;
  auto* p = static_cast<char*>(std::aligned_alloc(kHuge, rounded));
  if (p != nullptr) ::madvise(p, rounded, MADV_HUGEPAGE);  // advice only; failure is harmless
  return p;
}

class HostBuffer : public BackendBuffer {
 public:
  explicit HostBuffer(size_t bytes) : data_(AllocHost(bytes)), size_(bytes) {}
  ~HostBuffer() override { std::free(data_); }
  void* data() override { return data_; }
  size_t size() const override { return size_; }
  bool ok() const { return data_ != nullptr; }

 private:
  char* data_;
  size_t size_;
};

class CpuBackend : public Backend {
 public:
  CpuBackend(int num_threads, bool int8_activations, bool packed_weights)
      : pool_(num_threads), int8_activations_(int8_activations), packed_weights_(packed_weights) {}
  std::string_view name() const override { return "cpu"; }

  absl::StatusOr<std::unique_ptr<BackendBuffer>> Alloc(size_t bytes) override {
    auto buf = std::make_unique<HostBuffer>(bytes);
    if (!buf->ok()) {
      return absl::ResourceExhaustedError(StrCat("cpu backend: cannot allocate ", bytes, " bytes"));
    }
    return std::unique_ptr<BackendBuffer>(std::move(buf));
  }

  absl::StatusOr<WeightTensor> LoadWeight(const GgufTensorInfo& t) override {
    auto traits = GetTypeTraits(static_cast<uint32_t>(t.type));
    if (!traits || !traits->supported) {
      return absl::FailedPreconditionError(StrCat("tensor '", t.name, "' has type ",
                                                  TypeName(t.type),
                                                  ", which the cpu backend does not support"));
    }
    if (t.n_dims > 2) {
      return absl::FailedPreconditionError(
          StrCat("tensor '", t.name, "' has ", t.n_dims, " dims; weights are 1-D or 2-D"));
    }
    WeightTensor w;
    w.type = t.type;
    w.cols = t.ne[0];
    w.rows = t.n_dims == 2 ? t.ne[1] : 1;
    w.row_bytes = w.cols / traits->block_size * traits->type_size;
    w.data = t.data;
    packed_.erase(w.data);  // new weights at this address: an old packed copy is stale
    return w;
  }

  void CopyToBackend(const void* host, void* dst, size_t bytes) override {
    std::memcpy(dst, host, bytes);
  }
  void CopyToHost(const void* src, void* host, size_t bytes) override {
    std::memcpy(host, src, bytes);
  }
  void Copy(void* dst, const void* src, size_t bytes) override { std::memcpy(dst, src, bytes); }
  void Synchronize() override {}

  void Embed(const WeightTensor& table, const int32_t* tokens, int n, float* out) override {
    const auto* base = static_cast<const uint8_t*>(table.data);
    for (int i = 0; i < n; ++i) {
      cpu::DequantizeRowFast(table.type, base + tokens[i] * table.row_bytes, out + i * table.cols,
                             table.cols);
    }
  }

  void RmsNorm(const float* x, const WeightTensor& w, int n, int d, float eps,
               float* out) override {
    const auto* weight = static_cast<const float*>(w.data);
    pool_.ParallelFor(
        n,
        [&](int64_t b, int64_t e) {
          for (int64_t i = b; i < e; ++i) {
            const float* xi = x + i * d;
            double ss = 0;
            for (int j = 0; j < d; ++j) ss += static_cast<double>(xi[j]) * xi[j];
            const float scale = static_cast<float>(1.0 / std::sqrt(ss / d + eps));
            for (int j = 0; j < d; ++j) out[i * d + j] = weight[j] * (scale * xi[j]);
          }
        },
        static_cast<int64_t>(n) * d);
  }

  void MatMul(const WeightTensor& w, const float* x, int n, float* out) override {
    constexpr int64_t kRowsPerTask = 16;
    static_assert(kRowsPerTask % cpu::kPackRows == 0, "tasks hold whole packed row groups");
    if (int8_activations_ && cpu::Int8Supported(w.type)) {
      const int64_t nb = w.cols / kQK;
      act_.resize(static_cast<size_t>(n) * nb);
      pool_.ParallelFor(
          n,
          [&](int64_t b, int64_t e) {
            for (int64_t t = b; t < e; ++t)
              cpu::QuantizeActivations(x + t * w.cols, w.cols, act_.data() + t * nb);
          },
          static_cast<int64_t>(n) * w.cols);
      const int64_t tasks = (w.rows + kRowsPerTask - 1) / kRowsPerTask;
      const uint8_t* packed_data = PackedFor(w);
      pool_.ParallelFor(
          tasks,
          [&](int64_t b, int64_t e) {
            const int64_t rb = b * kRowsPerTask, re = std::min(w.rows, e * kRowsPerTask);
            if (packed_data != nullptr) {
              cpu::MatMulRowsInt8Packed(w, packed_data, act_.data(), n, out, w.rows, rb, re);
            } else {
              cpu::MatMulRowsInt8(w, act_.data(), n, out, w.rows, rb, re);
            }
          },
          w.rows * w.cols * n);
      return;
    }
    // The panel copy is made on the matrix's first matmul of several tokens (the server's
    // start-up calibration runs one; a model only ever decoded one token at a time keeps one
    // copy of its weights).
    const uint8_t* panels = n > 1 && w.type == GgmlType::kF32 ? PackedFor(w) : nullptr;
    if (panels != nullptr) {
      constexpr int64_t kRows = cpu::kF32PanelRows;
      pool_.ParallelFor(
          w.rows / kRows,
          [&](int64_t b, int64_t e) {
            cpu::MatMulF32Panels(w, reinterpret_cast<const float*>(panels), x, n, out, w.rows,
                                 b * kRows, e * kRows);
          },
          w.rows * w.cols * n);
      return;
    }
    const int64_t tasks = (w.rows + kRowsPerTask - 1) / kRowsPerTask;
    pool_.ParallelFor(
        tasks,
        [&](int64_t b, int64_t e) {
          std::vector<float> scratch(w.type == GgmlType::kF32 ? 0 : 4 * w.cols);
          cpu::MatMulRows(w, x, n, out, w.rows, b * kRowsPerTask,
                          std::min(w.rows, e * kRowsPerTask), scratch.data());
        },
        w.rows * w.cols * n);
  }

  void AddBias(float* x, const WeightTensor& bias, int n) override {
    const auto* b = static_cast<const float*>(bias.data);
    for (int i = 0; i < n; ++i) {
      for (int64_t j = 0; j < bias.cols; ++j) x[i * bias.cols + j] += b[j];
    }
  }

  void Rope(float* x, const int32_t* positions, int n, int heads, int head_dim,
            const RopeConfig& rope) override {
    const int rope_dim = rope.rope_dim;
    const int half = rope_dim / 2;
    std::vector<float> freq(half);
    for (int i = 0; i < half; ++i) {
      freq[i] = RopeFrequency(rope, i);
    }
    const RopeStyle style = rope.style;
    for (int t = 0; t < n; ++t) {
      for (int i = 0; i < half; ++i) {
        const float angle = static_cast<float>(positions[t]) * freq[i];
        const float c = std::cos(angle), s = std::sin(angle);
        for (int h = 0; h < heads; ++h) {
          float* v = x + (static_cast<int64_t>(t) * heads + h) * head_dim;
          const int a = style == RopeStyle::kAdjacentPairs ? 2 * i : i;
          const int b = style == RopeStyle::kAdjacentPairs ? 2 * i + 1 : i + half;
          const float x0 = v[a], x1 = v[b];
          v[a] = x0 * c - x1 * s;
          v[b] = x0 * s + x1 * c;
        }
      }
    }
  }

  void KvWrite(const float* k, const float* v, const AttentionLayout& layout, int kv_dim,
               float* k_cache, float* v_cache) override {
    for (int t = 0; t < layout.num_tokens; ++t) {
      const int64_t slot = cpu::CacheSlot(layout, t, layout.positions[t]);
      std::memcpy(k_cache + slot * kv_dim, k + static_cast<int64_t>(t) * kv_dim, kv_dim * 4);
      std::memcpy(v_cache + slot * kv_dim, v + static_cast<int64_t>(t) * kv_dim, kv_dim * 4);
    }
  }

  void Attention(const float* q, const float* k_cache, const float* v_cache,
                 const AttentionLayout& layout, int heads, int kv_heads, int head_dim, float scale,
                 float* out) override {
    cpu::Attention(pool_, q, k_cache, v_cache, layout, heads, kv_heads, head_dim, scale, out);
  }

  void SwiGlu(const float* gate, const float* up, int n, int d, float* out) override {
    const int64_t count = static_cast<int64_t>(n) * d;
    for (int64_t i = 0; i < count; ++i) {
      const float g = gate[i];
      out[i] = g / (1.0f + std::exp(-g)) * up[i];
    }
  }

  void Add(float* x, const float* y, int64_t count) override {
    for (int64_t i = 0; i < count; ++i) x[i] += y[i];
  }

  absl::Status SampleRows(const float* logits, int num_rows, int vocab,
                          const std::vector<RowSampling>& rows,
                          std::vector<SampledToken>* out) override {
    out->resize(rows.size());
    for (size_t i = 0; i < rows.size(); ++i) {
      if (rows[i].row < 0 || rows[i].row >= num_rows) {
        return absl::InvalidArgumentError(
            StrCat("sample rows: row ", rows[i].row, " is outside [0, ", num_rows, ")"));
      }
      std::span<const float> l(logits + static_cast<size_t>(rows[i].row) * vocab,
                               static_cast<size_t>(vocab));
      (*out)[i] = rule_.Sample(l, l, rows[i]);
    }
    return absl::OkStatus();
  }
  void GatherRows(const float* x, const int32_t* rows, int m, int d, float* out) override {
    for (int j = 0; j < m; ++j) {
      std::memcpy(out + static_cast<int64_t>(j) * d, x + static_cast<int64_t>(rows[j]) * d, d * 4);
    }
  }

 private:
  ThreadPool pool_;
  const bool int8_activations_;
  const bool packed_weights_;
  // Packed copies, made on a matrix's first matmul so that an embedding table only Embed reads
  // (it reads the original rows) is never copied: Q8_0 / Q4_0 / Q4_K / Q6_K for the int8
  // kernels in 16-row interleaved records (cpu_int8_packed.h), F32 in 32-row column panels for
  // matmuls of several tokens (cpu_gemm_f32.h). nullptr: no copy for w (packing off, another
  // type or shape, or no memory for it: the row kernels run instead).
  const uint8_t* PackedFor(const WeightTensor& w) {
    if (!packed_weights_) return nullptr;
    const bool int8 = cpu::Int8PackSupported(w);
    if (!int8 && !cpu::F32PanelSupported(w)) return nullptr;
    auto it = packed_.find(w.data);
    if (it != packed_.end() && it->second.type == w.type && it->second.rows == w.rows &&
        it->second.cols == w.cols) {
      return static_cast<const uint8_t*>(it->second.buffer->data());
    }
    auto buf = Alloc(int8 ? cpu::Int8PackedBytes(w) : cpu::F32PanelBytes(w));
    if (!buf.ok()) return nullptr;
    auto* dst = static_cast<uint8_t*>((*buf)->data());
    if (int8) {
      pool_.ParallelFor(
          w.rows / cpu::kPackRows, [&](int64_t b, int64_t e) { cpu::PackInt8Rows(w, b, e, dst); },
          w.rows * w.cols);
    } else {
      pool_.ParallelFor(
          w.rows / cpu::kF32PanelRows,
          [&](int64_t b, int64_t e) { cpu::PackF32Panels(w, b, e, reinterpret_cast<float*>(dst)); },
          w.rows * w.cols);
    }
    packed_[w.data] = PackedWeight{w.type, w.rows, w.cols, std::move(*buf)};
    return dst;
  }

  std::vector<cpu::ActBlockQ8> act_;  // quantized activations of the current matmul
  struct PackedWeight {
    GgmlType type;
    int64_t rows, cols;
    std::unique_ptr<BackendBuffer> buffer;
  };
  // Packed copies by the weight's data pointer; LoadWeight drops the entry of an address it
  // hands out again.
  std::unordered_map<const void*, PackedWeight> packed_;
  RowSampler rule_;
};

}  // namespace

std::unique_ptr<Backend> CreateCpuBackend(int num_threads) {
  return std::make_unique<CpuBackend>(num_threads, false, false);
}

std::unique_ptr<Backend> CreateCpuBackend(int num_threads, bool int8_activations,
                                          bool packed_weights) {
  return std::make_unique<CpuBackend>(num_threads, int8_activations, packed_weights);
}

}  // namespace chorus
