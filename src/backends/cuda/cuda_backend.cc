// CUDA implementation of the Backend interface (see include/chorus/backends/cuda_backend.h).
#include "chorus/backends/cuda_backend.h"

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <unordered_map>
#include <vector>

#include "chorus/backends/device_plan.h"
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

bool Quantized(GgmlType t) {
  return t != GgmlType::kF32 && t != GgmlType::kF16 && t != GgmlType::kBF16;
}

// Decode batches up to this many rows may be captured as graphs.
constexpr int kGraphMaxTokens = 64;
constexpr size_t kMaxGraphs =
    512;  // tensor-parallel ranks keep one graph per segment between all-reduces
// Runs of at least this many query rows go to the tiled prefill attention.
constexpr int kMinQueryTile = 4;
constexpr size_t kBlasWorkspace = size_t{32} << 20;

enum Op : uint64_t {
  kOpAddRmsNorm = 100,
  kOpRopeKvWrite,
  kOpGemvSwiGlu,
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
              const CudaBackendOptions& options)
      : device_(device),
        stream_(stream),
        blas_(blas),
        blas_workspace_(blas_workspace),
        options_(options),
        tape_(this, options.graphs ? kMaxGraphs : 0) {}
  ~CudaBackend() override {
    Flush();
    cudaStreamSynchronize(stream_);
    tape_.Clear();
    for (void* p : weights_) cudaFree(p);
    for (auto& [w, p] : dequantized_) cudaFree(p);
    cublasDestroy(blas_);
    cudaFree(blas_workspace_);
    cudaStreamDestroy(stream_);
  }
  std::string_view name() const override { return "cuda"; }
  int KvBytesPerValue() const override { return options_.kv_f16 ? 2 : 4; }
  CudaGraphStats graph_stats() const {
    const OpTape::Stats& s = tape_.stats();
    return {s.eager,
            s.captured,
            s.replayed,
            s.capture_failures,
            static_cast<int64_t>(tape_.graphs()),
            dequantized_bytes_};
  }

  absl::StatusOr<std::unique_ptr<BackendBuffer>> Alloc(size_t bytes) override {
    Flush();
    void* p = nullptr;
    if (cudaMalloc(&p, std::max<size_t>(bytes, 16)) != cudaSuccess) {
      cudaGetLastError();
      return absl::ResourceExhaustedError(
          StrCat("cuda: out of device memory allocating ", bytes, " bytes"));
    }
    return std::unique_ptr<BackendBuffer>(new DeviceBuffer(p, bytes));
  }

  absl::StatusOr<WeightTensor> LoadWeight(const GgufTensorInfo& t) override {
    Flush();
    auto traits = GetTypeTraits(static_cast<uint32_t>(t.type));
    if (!traits || !traits->supported || t.n_dims > 2 ||
        k::BlockBytes(static_cast<int>(t.type)) == 0) {
      return absl::FailedPreconditionError(StrCat("tensor '", t.name, "' has type ",
                                                  TypeName(t.type),
                                                  " or shape the cuda backend does not support"));
    }
    void* p = nullptr;
    if (cudaMalloc(&p, static_cast<size_t>(t.num_bytes)) != cudaSuccess) {
      cudaGetLastError();
      return absl::ResourceExhaustedError(StrCat("cuda: out of device memory loading tensor '",
                                                 t.name, "' (", t.num_bytes, " bytes)"));
    }
    weights_.push_back(p);
    // On the compute stream (ordered with every op, which runs on a non-blocking stream that
    // the legacy default stream does not order), then waited for: the source may be pageable.
    if (cudaMemcpyAsync(p, t.data, static_cast<size_t>(t.num_bytes), cudaMemcpyHostToDevice,
                        stream_) != cudaSuccess ||
        cudaStreamSynchronize(stream_) != cudaSuccess) {
      cudaGetLastError();
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
    Flush();
    Check(cudaMemcpyAsync(dst, host, bytes, cudaMemcpyHostToDevice, stream_));
    Check(cudaStreamSynchronize(stream_));  // the host buffer may go away after the call
  }
  void CopyToHost(const void* src, void* host, size_t bytes) override {
    Flush();
    Check(cudaMemcpyAsync(host, src, bytes, cudaMemcpyDeviceToHost, stream_));
    Check(cudaStreamSynchronize(stream_));
  }
  void Copy(void* dst, const void* src, size_t bytes) override {
    Flush();
    Check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream_));
  }
  void Synchronize() override {
    Flush();
    Check(cudaStreamSynchronize(stream_));
  }
  absl::Status TakeError() override {
    Flush();
    absl::Status s = error_;
    error_ = absl::OkStatus();
    return s;
  }

  // Uploads the forward's integer inputs in one copy: tokens, positions, sequence ids, block
  // tables (row stride rounded up to a power of two for graph batches, so that a growing
  // sequence keeps its graph), logit rows, the attention plan (query tiles, single rows).
  void BeginForward(const int32_t* tokens, const AttentionLayout& l, const int32_t* logit_rows,
                    int num_logit_rows) override {
    Flush();
    const int n = l.num_tokens;
    const bool graph = options_.graphs && n <= kGraphMaxTokens;
    int num_seqs = 0;
    for (int t = 0; t < n; ++t) num_seqs = std::max(num_seqs, l.seq_of_token[t] + 1);
    const int stride =
        graph ? static_cast<int>(RoundUpPow2(l.max_blocks_per_seq)) : l.max_blocks_per_seq;
    plan_ = PlanQueryTiles(l.positions, l.seq_of_token, n, k::kQueryTile, kMinQueryTile);
    int max_pos = 0, max_single_pos = 0;
    for (int t = 0; t < n; ++t) max_pos = std::max(max_pos, l.positions[t]);
    for (int32_t t : plan_.singles) max_single_pos = std::max(max_single_pos, l.positions[t]);
    auto splits = [&](int pos) {
      const int s = pos / k::kAttentionChunk + 1;
      return graph ? static_cast<int>(RoundUpPow2(s)) : s;
    };
    splits_all_ = splits(max_pos);
    splits_singles_ = splits(max_single_pos);

    const size_t un = static_cast<size_t>(n);
    const size_t tables = static_cast<size_t>(num_seqs) * stride;
    const size_t ntiles = plan_.tiles.size(), nsingles = plan_.singles.size();
    const size_t ints =
        3 * un + tables + static_cast<size_t>(num_logit_rows) + 2 * ntiles + nsingles;
    host_.assign(ints, 0);
    int32_t* h = host_.data();
    std::memcpy(h, tokens, un * 4);
    std::memcpy(h + un, l.positions, un * 4);
    std::memcpy(h + 2 * un, l.seq_of_token, un * 4);
    for (int s = 0; s < num_seqs; ++s) {
      std::memcpy(h + 3 * un + static_cast<size_t>(s) * stride,
                  l.block_tables + static_cast<size_t>(s) * l.max_blocks_per_seq,
                  l.max_blocks_per_seq * 4);
    }
    int32_t* rows = h + 3 * un + tables;
    if (num_logit_rows > 0) std::memcpy(rows, logit_rows, num_logit_rows * 4);
    int32_t* tiles = rows + num_logit_rows;
    for (size_t i = 0; i < ntiles; ++i) {
      tiles[2 * i] = plan_.tiles[i].first;
      tiles[2 * i + 1] = plan_.tiles[i].count;
    }
    if (nsingles > 0) std::memcpy(tiles + 2 * ntiles, plan_.singles.data(), nsingles * 4);

    // Nothing is cached until the upload succeeds: after a failure the ops upload their own
    // inputs or report the missing layout, and never read a freed buffer.
    host_tokens_ = host_positions_ = host_rows_ = nullptr;
    dev_tokens_ = dev_rows_ = dev_tiles_ = dev_singles_ = nullptr;
    layout_ = {};
    if (!Grow(ints_, ints * 4)) return;
    Check(cudaMemcpyAsync(ints_.p, h, ints * 4, cudaMemcpyHostToDevice, stream_));
    Check(cudaStreamSynchronize(stream_));
    auto* d = static_cast<int32_t*>(ints_.p);
    host_tokens_ = tokens;
    host_positions_ = l.positions;
    host_rows_ = logit_rows;
    dev_tokens_ = d;
    layout_ = {n, d + un, d + 2 * un, d + 3 * un, stride, l.block_size};
    dev_rows_ = d + 3 * un + tables;
    dev_tiles_ = dev_rows_ + num_logit_rows;
    dev_singles_ = dev_tiles_ + 2 * ntiles;
    tape_.set_capturable(graph);
  }

  void Embed(const WeightTensor& table, const int32_t* tokens, int n, float* out) override {
    const int32_t* dt = Device(tokens, host_tokens_, dev_tokens_, n);
    const k::DeviceWeight w = Dev(table);
    PushOp({kOpEmbed, W(w.data), W(dt), W(n), W(out)},
           [=, this] { Check(k::Embed(w, dt, n, out, stream_)); });
  }
  void RmsNorm(const float* x, const WeightTensor& w, int n, int d, float eps,
               float* out) override {
    const auto* wd = static_cast<const float*>(w.data);
    if (staged_add_.x == x && staged_add_.count == static_cast<int64_t>(n) * d && x != out) {
      // The residual add just recorded feeds this norm: one kernel for both.
      float* xm = staged_add_.x;
      const float* y = staged_add_.y;
      staged_add_ = {};
      PushOp({kOpAddRmsNorm, W(xm), W(y), W(wd), W(n), W(d), W(eps), W(out)},
             [=, this] { Check(k::AddRmsNorm(xm, y, wd, n, d, eps, out, stream_)); });
      return;
    }
    PushOp({kOpRmsNorm, W(x), W(wd), W(n), W(d), W(eps), W(out)},
           [=, this] { Check(k::RmsNorm(x, wd, n, d, eps, out, stream_)); });
  }
  // Up to 8 rows: the GEMV. Consecutive GEMVs over the same input (Q, K, V; gate, up) are
  // staged and launched as one group.
  void MatMul(const WeightTensor& w, const float* x, int n, float* out) override {
    if (n <= k::kMaxGemvTokens) {
      const k::DeviceWeight dw = Dev(w);
      StagedGemv& g = staged_;
      const bool joins = options_.fuse && g.count > 0 && g.count < k::kMaxGemvGroup && g.x == x &&
                         g.n == n && g.w[0].type == dw.type && g.w[0].cols == dw.cols;
      if (!joins) {
        PushStaged();
        g.x = x;
        g.n = n;
      }
      g.w[g.count] = dw;
      g.out[g.count] = out;
      ++g.count;
      if (!options_.fuse) PushStaged();
      return;
    }
    Gemm(w, x, n, out);
  }
  void AddBias(float* x, const WeightTensor& bias, int n) override {
    const auto* b = static_cast<const float*>(bias.data);
    const int d = static_cast<int>(bias.cols);
    PushOp({kOpBias, W(x), W(b), W(n), W(d)},
           [=, this] { Check(k::AddBias(x, b, n, d, stream_)); });
  }
  void Rope(float* x, const int32_t* positions, int n, int heads, int head_dim,
            const RopeConfig& rope) override {
    const int32_t* dp = Device(positions, host_positions_, layout_.positions, n);
    const k::RopeArgs args{rope.rope_dim, rope.freq_base, rope.freq_scale, rope.freq_factors,
                           rope.style == RopeStyle::kHalves};
    StagedRope& r = staged_rope_;
    if (r.a != nullptr && r.b == nullptr && r.positions == dp && r.n == n &&
        r.head_dim == head_dim && SameRope(r.rope, args) && r.a != x) {
      // Q then K of the same tokens: one launch, still staged (the KV write of K may join).
      r.b = x;
      r.heads_b = heads;
      return;
    }
    PushStaged();
    r = {x, heads, nullptr, 0, dp, n, head_dim, args};
    if (!options_.fuse) PushStaged();
  }
  void KvWrite(const float* kk, const float* v, const AttentionLayout& layout, int kv_dim,
               float* k_cache, float* v_cache) override {
    if (!LayoutReady(layout)) return;
    const k::DeviceLayout l = layout_;
    const bool half = options_.kv_f16;
    const StagedRope r = staged_rope_;
    if (r.b == kk && r.b != nullptr && r.positions == l.positions && r.n == l.num_tokens &&
        r.heads_b * r.head_dim == kv_dim) {
      // RoPE of Q and K, then K and V into the cache: one kernel per step and layer.
      staged_rope_ = {};
      PushOp({kOpRopeKvWrite, W(r.a), W(r.heads), W(r.b), W(r.heads_b), W(v), W(l.positions),
              W(l.block_tables), W(l.max_blocks_per_seq), W(l.block_size), W(l.num_tokens),
              W(r.head_dim), W(r.rope.rope_dim), W(r.rope.freq_base), W(r.rope.freq_scale),
              W(r.rope.freq_factors), W(r.rope.halves), W(half), W(k_cache), W(v_cache)},
             [=, this] {
               Check(k::RopeKvWrite(r.a, r.heads, r.b, r.heads_b, v, l, r.head_dim, r.rope, half,
                                    k_cache, v_cache, stream_));
             });
      return;
    }
    PushOp({kOpKvWrite, W(kk), W(v), W(l.positions), W(l.block_tables), W(l.max_blocks_per_seq),
            W(l.block_size), W(l.num_tokens), W(kv_dim), W(half), W(k_cache), W(v_cache)},
           [=, this] { Check(k::KvWrite(kk, v, l, kv_dim, half, k_cache, v_cache, stream_)); });
  }
  // Runs of prefill rows go to the tiled kernel, single rows (decode) to the split kernel; a
  // head_dim above the tiled kernel's limit sends every row to the split kernel.
  void Attention(const float* q, const float* k_cache, const float* v_cache,
                 const AttentionLayout& layout, int heads, int kv_heads, int head_dim, float scale,
                 float* out) override {
    if (!LayoutReady(layout)) return;
    const bool tiled = head_dim <= k::kMaxTiledHeadDim && !plan_.tiles.empty();
    const int num_tiles = tiled ? static_cast<int>(plan_.tiles.size()) : 0;
    const int32_t* tiles = dev_tiles_;
    const int32_t* rows = tiled ? dev_singles_ : nullptr;
    const int num_rows = tiled ? static_cast<int>(plan_.singles.size()) : layout_.num_tokens;
    const int splits = tiled ? splits_singles_ : splits_all_;
    const size_t bytes = static_cast<size_t>(num_rows) * heads * splits * (head_dim + 2) * 4;
    if (num_rows > 0 && !Grow(attn_, bytes)) return;
    auto* scratch = static_cast<float*>(attn_.p);
    const k::DeviceLayout l = layout_;
    const bool half = options_.kv_f16;
    PushOp({kOpAttention,
            W(q),
            W(k_cache),
            W(v_cache),
            W(half),
            W(l.positions),
            W(l.block_tables),
            W(l.max_blocks_per_seq),
            W(l.block_size),
            W(l.num_tokens),
            W(tiles),
            W(num_tiles),
            W(rows),
            W(num_rows),
            W(heads),
            W(kv_heads),
            W(head_dim),
            W(scale),
            W(splits),
            W(scratch),
            W(out)},
           [=, this] {
             Check(k::TiledAttention(q, k_cache, v_cache, half, l, tiles, num_tiles, heads,
                                     kv_heads, head_dim, scale, out, stream_));
             Check(k::Attention(q, k_cache, v_cache, half, l, rows, num_rows, heads, kv_heads,
                                head_dim, scale, splits, scratch, out, stream_));
           });
  }
  void SwiGlu(const float* gate, const float* up, int n, int d, float* out) override {
    const int64_t count = static_cast<int64_t>(n) * d;
    const StagedGemv& g = staged_;
    if (g.count == 2 && g.out[0] == gate && g.out[1] == up && out == gate && g.n == n &&
        g.w[0].rows == d && k::GemvSwiGluSupported(g.w[0], g.w[1], g.x)) {
      // The gate/up group just recorded feeds this SwiGLU: apply it in the GEMV's epilogue.
      const k::DeviceWeight wg = g.w[0], wu = g.w[1];
      const float* x = g.x;
      float* up_out = g.out[1];
      staged_.count = 0;
      PushOp({kOpGemvSwiGlu, W(wg.data), W(wu.data), W(x), W(n), W(out), W(up_out)},
             [=, this] { Check(k::GemvSwiGlu(wg, wu, x, n, out, up_out, stream_)); });
      return;
    }
    PushOp({kOpSwiGlu, W(gate), W(up), W(count), W(out)},
           [=, this] { Check(k::SwiGlu(gate, up, count, out, stream_)); });
  }
  // Staged: when the next op is the RMSNorm of x, both run as one kernel.
  void Add(float* x, const float* y, int64_t count) override {
    PushStaged();
    staged_add_ = {x, y, count};
    if (!options_.fuse) PushStaged();
  }
  absl::Status SampleRows(const float* logits, int num_rows, int vocab,
                          const std::vector<RowSampling>& rows,
                          std::vector<SampledToken>* out) override {
    Flush();
    const int draws = static_cast<int>(rows.size());
    std::vector<k::SamplingRow> host(draws);
    for (int i = 0; i < draws; ++i) {
      const RowSampling& r = rows[i];
      if (r.row < 0 || r.row >= num_rows) {
        return absl::InvalidArgumentError(
            StrCat("sample rows: row ", r.row, " is outside [0, ", num_rows, ")"));
      }
      host[i] = {r.temperature, r.top_k, r.top_p, r.min_p, r.uniform, r.row};
    }
    out->resize(draws);
    if (draws == 0) return TakeError();
    const size_t pbytes = draws * sizeof(k::SamplingRow), obytes = draws * 8;
    if (!Grow(sample_, pbytes + obytes)) return TakeError();
    auto* dparams = static_cast<k::SamplingRow*>(sample_.p);
    auto* dtokens = reinterpret_cast<int32_t*>(static_cast<char*>(sample_.p) + pbytes);
    auto* dlogp = reinterpret_cast<float*>(dtokens + draws);
    Check(cudaMemcpyAsync(dparams, host.data(), pbytes, cudaMemcpyHostToDevice, stream_));
    Check(k::SampleRows(logits, vocab, dparams, draws, dtokens, dlogp, stream_));
    sampled_.resize(2 * static_cast<size_t>(draws));
    Check(cudaMemcpyAsync(sampled_.data(), dtokens, obytes, cudaMemcpyDeviceToHost, stream_));
    Check(cudaStreamSynchronize(stream_));
    for (int i = 0; i < draws; ++i) {
      (*out)[i].token = sampled_[i];
      std::memcpy(&(*out)[i].logprob, &sampled_[draws + i], 4);
    }
    return TakeError();
  }
  void GatherRows(const float* x, const int32_t* rows, int m, int d, float* out) override {
    const int32_t* dr = Device(rows, host_rows_, dev_rows_, m);
    PushOp({kOpGather, W(x), W(dr), W(m), W(d), W(out)},
           [=, this] { Check(k::GatherRows(x, dr, m, d, out, stream_)); });
  }

  // GraphDriver: stream capture on the backend's stream.
  bool BeginCapture() override {
    saved_error_ = error_;
    if (cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal) != cudaSuccess) {
      cudaGetLastError();
      return false;
    }
    return true;
  }
  void* EndCapture() override {
    cudaGraph_t graph = nullptr;
    const cudaError_t e = cudaStreamEndCapture(stream_, &graph);
    const bool op_failed = !error_.ok() && saved_error_.ok();
    error_ = saved_error_;  // the ops run again eagerly if capture failed and report then
    if (e != cudaSuccess || graph == nullptr || op_failed) {
      if (graph != nullptr) cudaGraphDestroy(graph);
      cudaGetLastError();
      return nullptr;
    }
    cudaGraphExec_t exec = nullptr;
    const cudaError_t ie = cudaGraphInstantiate(&exec, graph, 0);
    cudaGraphDestroy(graph);
    if (ie != cudaSuccess) {
      cudaGetLastError();
      return nullptr;
    }
    return exec;
  }
  bool Launch(void* graph) override {
    if (cudaGraphLaunch(static_cast<cudaGraphExec_t>(graph), stream_) != cudaSuccess) {
      cudaGetLastError();
      return false;
    }
    return true;
  }
  void Destroy(void* graph) override { cudaGraphExecDestroy(static_cast<cudaGraphExec_t>(graph)); }

 private:
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
  void PushStaged() {
    if (staged_add_.x != nullptr) {
      const StagedAdd a = staged_add_;
      staged_add_ = {};
      tape_.Push({kOpAdd, W(a.x), W(a.y), W(a.count)},
                 [=, this] { Check(k::Add(a.x, a.y, a.count, stream_)); });
    }
    if (staged_rope_.a != nullptr) {
      const StagedRope r = staged_rope_;
      staged_rope_ = {};
      tape_.Push({kOpRope, W(r.a), W(r.heads), W(r.b), W(r.heads_b), W(r.positions), W(r.n),
                  W(r.head_dim), W(r.rope.rope_dim), W(r.rope.freq_base), W(r.rope.freq_scale),
                  W(r.rope.freq_factors), W(r.rope.halves)},
                 [=, this] {
                   Check(k::RopePair(r.a, r.heads, r.b, r.heads_b, r.positions, r.n, r.head_dim,
                                     r.rope, stream_));
                 });
    }
    if (staged_.count == 0) return;
    const StagedGemv g = staged_;
    staged_.count = 0;
    uint64_t words[2 * k::kMaxGemvGroup] = {};
    for (int i = 0; i < g.count; ++i) {
      words[2 * i] = W(g.w[i].data);
      words[2 * i + 1] = W(g.out[i]);
    }
    static_assert(k::kMaxGemvGroup == 3);
    tape_.Push({kOpGemv, W(g.count), W(g.x), W(g.n), words[0], words[1], words[2], words[3],
                words[4], words[5]},
               [=, this] { Check(k::GemvGroup(g.w, g.out, g.count, g.x, g.n, stream_)); });
  }
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
  // Makes a scratch area at least `bytes` long (powers of two, so it settles quickly). Growing
  // frees the old area: pending ops run first, and graphs that pointed into it are dropped.
  bool Grow(Scratch& s, size_t bytes) {
    if (bytes <= s.n) return true;
    Flush();  // also selects the device
    Check(cudaStreamSynchronize(stream_));
    tape_.Clear();
    return Check(s.Ensure(static_cast<size_t>(RoundUpPow2(static_cast<int64_t>(bytes)))));
  }
  // The device copy of a host array uploaded by BeginForward, or a fresh upload (pending ops run
  // first: they may still read the previous upload).
  const int32_t* Device(const int32_t* host, const int32_t* cached_host, const int32_t* cached_dev,
                        int n) {
    if (host == cached_host && cached_dev != nullptr) return cached_dev;
    Flush();
    if (!Grow(extra_, static_cast<size_t>(n) * 4)) return nullptr;
    Check(cudaMemcpyAsync(extra_.p, host, static_cast<size_t>(n) * 4, cudaMemcpyHostToDevice,
                          stream_));
    Check(cudaStreamSynchronize(stream_));
    return static_cast<const int32_t*>(extra_.p);
  }
  bool LayoutReady(const AttentionLayout& l) {
    if (l.positions == host_positions_ && l.num_tokens == layout_.num_tokens) return true;
    if (error_.ok())
      error_ = absl::InternalError("cuda: attention layout was not prepared by BeginForward");
    return false;
  }

  // A persistent half-precision copy of a quantized weight for GEMMs, while the cache's share of
  // device memory lasts (free memory at first use minus a reserve); null when it does not fit.
  const void* Dequantized(const WeightTensor& w) {
    auto it = dequantized_.find(w.data);
    if (it != dequantized_.end()) return it->second;
    if (!options_.dequant_cache) return nullptr;
    Use();
    const size_t bytes = static_cast<size_t>(w.rows) * w.cols * 2;
    if (dequant_budget_ < 0) {
      size_t free = 0, total = 0;
      if (cudaMemGetInfo(&free, &total) != cudaSuccess) {
        cudaGetLastError();
        dequant_budget_ = 0;
      } else {
        const size_t reserve = std::max<size_t>(size_t{1} << 30, total / 10);
        dequant_budget_ = free > reserve ? static_cast<int64_t>(free - reserve) : 0;
      }
    }
    if (dequantized_bytes_ + static_cast<int64_t>(bytes) > dequant_budget_) return nullptr;
    void* p = nullptr;
    if (cudaMalloc(&p, bytes) != cudaSuccess) {
      cudaGetLastError();
      dequant_budget_ = 0;
      return nullptr;
    }
    // Launched now, outside any capture: it reads only the weight and writes fresh memory, so
    // running ahead of the pending ops is safe.
    if (!Check(k::DequantizeToHalf(Dev(w), p, stream_))) {
      cudaFree(p);
      return nullptr;
    }
    dequantized_.emplace(w.data, p);
    dequantized_bytes_ += static_cast<int64_t>(bytes);
    return p;
  }

  // out[n, rows] = x[n, cols] * W^T with cuBLAS (column-major view: W is cols x rows). 16-bit and
  // quantized weights multiply half / bfloat16 activations with F32 accumulation; quantized
  // weights use their cached half copy, or are dequantized into scratch for this call.
  void Gemm(const WeightTensor& w, const float* x, int n, float* out) {
    const int m = static_cast<int>(w.rows), kk = static_cast<int>(w.cols);
    if (w.type == GgmlType::kF32) {
      const void* a = w.data;
      PushOp({kOpGemm, W(a), W(x), W(n), W(out), W(m), W(kk)}, [=, this] {
        const float one = 1.0f, zero = 0.0f;
        Check(cublasGemmEx(blas_, CUBLAS_OP_T, CUBLAS_OP_N, m, n, kk, &one, a, CUDA_R_32F, kk, x,
                           CUDA_R_32F, kk, &zero, out, CUDA_R_32F, m, CUBLAS_COMPUTE_32F,
                           CUBLAS_GEMM_DEFAULT));
      });
      return;
    }
    const bool bf16 = w.type == GgmlType::kBF16;
    const void* a = w.data;
    void* deq = nullptr;
    if (Quantized(w.type)) {
      a = Dequantized(w);
      if (a == nullptr) {
        if (!Grow(deq_, static_cast<size_t>(m) * kk * 2)) return;
        deq = deq_.p;
        a = deq;
      }
    }
    if (!Grow(act_, static_cast<size_t>(n) * kk * 2)) return;
    void* act = act_.p;
    const k::DeviceWeight dw = Dev(w);
    PushOp({kOpGemm, W(dw.data), W(a), W(deq), W(x), W(n), W(out), W(act), W(m), W(kk)}, [=, this] {
      const int64_t count = static_cast<int64_t>(n) * kk;
      Check(bf16 ? k::FloatToBf16(x, count, act, stream_) : k::FloatToHalf(x, count, act, stream_));
      if (deq != nullptr) Check(k::DequantizeToHalf(dw, deq, stream_));
      const cudaDataType t = bf16 ? CUDA_R_16BF : CUDA_R_16F;
      const float one = 1.0f, zero = 0.0f;
      Check(cublasGemmEx(blas_, CUBLAS_OP_T, CUBLAS_OP_N, m, n, kk, &one, a, t, kk, act, t, kk,
                         &zero, out, CUDA_R_32F, m, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    });
  }

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
  // GEMVs recorded but not yet on the tape (they may still be joined by the next one).
  struct StagedGemv {
    int count = 0;
    k::DeviceWeight w[k::kMaxGemvGroup];
    float* out[k::kMaxGemvGroup];
    const float* x = nullptr;
    int n = 0;
  };
  StagedGemv staged_;
  struct StagedAdd {
    float* x = nullptr;
    const float* y = nullptr;
    int64_t count = 0;
  };
  StagedAdd staged_add_;
  struct StagedRope {
    float* a = nullptr;  // Q (or a lone tensor)
    int heads = 0;
    float* b = nullptr;  // K once it joined
    int heads_b = 0;
    const int32_t* positions = nullptr;
    int n = 0, head_dim = 0;
    k::RopeArgs rope{};
  };
  static bool SameRope(const k::RopeArgs& a, const k::RopeArgs& b) {
    return a.rope_dim == b.rope_dim && a.freq_base == b.freq_base &&
           a.freq_scale == b.freq_scale && a.freq_factors == b.freq_factors &&
           a.halves == b.halves;
  }
  StagedRope staged_rope_;
  OpTape tape_;  // last: destroyed first, while the driver above is intact
};

}  // namespace

int CudaDeviceCount() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // no driver, no device or a driver error: none usable (see below)
    return 0;
  }
  return n;
}

std::string CudaDeviceStatus() {
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e == cudaSuccess && n > 0) return "";
  cudaGetLastError();
  if (e == cudaSuccess || e == cudaErrorNoDevice) return "no CUDA device";
  if (e == cudaErrorInsufficientDriver) return "no CUDA driver, or one older than the runtime";
  return StrCat("CUDA driver error ", static_cast<int>(e), ": ", cudaGetErrorString(e));
}

CudaBackendOptions CudaBackendOptions::FromEnvironment() {
  CudaBackendOptions o;
  auto off = [](const char* name) {
    const char* v = std::getenv(name);
    return v != nullptr && (std::strcmp(v, "0") == 0 || std::strcmp(v, "off") == 0);
  };
  o.graphs = !off("CHORUS_CUDA_GRAPHS");
  o.dequant_cache = !off("CHORUS_CUDA_DEQUANT_CACHE");
  o.kv_f16 = !off("CHORUS_CUDA_KV_F16");
  o.fuse = !off("CHORUS_CUDA_FUSE");
  return o;
}

absl::StatusOr<std::unique_ptr<Backend>> CreateCudaBackend(int device) {
  return CreateCudaBackend(device, CudaBackendOptions::FromEnvironment());
}

absl::StatusOr<std::unique_ptr<Backend>> CreateCudaBackend(int device,
                                                           const CudaBackendOptions& options) {
  const int count = CudaDeviceCount();
  if (device < 0 || device >= count) {
    const std::string why = CudaDeviceStatus();
    return absl::FailedPreconditionError(StrCat("cuda: device ", device, " not available (",
                                                count, " devices", why.empty() ? "" : "; ", why,
                                                ")"));
  }
  if (cudaSetDevice(device) != cudaSuccess) {
    cudaGetLastError();
    return absl::InternalError("cuda: cudaSetDevice failed");
  }
  cudaStream_t stream;
  if (cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking) != cudaSuccess) {
    cudaGetLastError();
    return absl::InternalError("cuda: cannot create a stream");
  }
  cublasHandle_t blas;
  if (cublasCreate(&blas) != CUBLAS_STATUS_SUCCESS) {
    cudaStreamDestroy(stream);
    return absl::InternalError("cublas: cannot create a handle");
  }
  // A workspace of our own, so that cuBLAS never allocates while a graph is being captured.
  void* workspace = nullptr;
  if (cudaMalloc(&workspace, kBlasWorkspace) != cudaSuccess) {
    cudaGetLastError();
    cublasDestroy(blas);
    cudaStreamDestroy(stream);
    return absl::ResourceExhaustedError("cuda: out of device memory for the cuBLAS workspace");
  }
  cublasSetStream(blas, stream);
  cublasSetWorkspace(blas, workspace, kBlasWorkspace);
  cublasSetMathMode(blas, CUBLAS_DEFAULT_MATH);  // no TF32: F32 weights stay F32
  return std::unique_ptr<Backend>(new CudaBackend(device, stream, blas, workspace, options));
}

CudaGraphStats GetCudaGraphStats(const Backend& backend) {
  if (backend.name() != "cuda") return {};
  return static_cast<const CudaBackend&>(backend).graph_stats();
}

}  // namespace chorus
