// The CUDA backend's ops: each is recorded on the OpTape with its signature (device_plan.h), or
// staged so that the next op may join it under the fusion rules (fusion.h).
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "chorus/backends/device_plan.h"
#include "chorus/backends/fusion.h"
#include "cuda_backend_internal.h"
#include "kernels.h"

namespace chorus::cuda_internal {

void CudaBackend::Embed(const WeightTensor& table, const int32_t* tokens, int n, float* out) {
  const int32_t* dt = Device(tokens, host_tokens_, dev_tokens_, n);
  const k::DeviceWeight w = Dev(table);
  PushOp({kOpEmbed, W(w.data), W(dt), W(n), W(out)},
         [=, this] { Check(k::Embed(w, dt, n, out, stream_)); });
}

void CudaBackend::RmsNorm(const float* x, const WeightTensor& w, int n, int d, float eps,
                          float* out) {
  const auto* wd = static_cast<const float*>(w.data);
  if (AddFusesIntoRmsNorm(staged_add_, x, n, d, out)) {
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
void CudaBackend::MatMul(const WeightTensor& w, const float* x, int n, float* out) {
  if (n <= k::kMaxGemvTokens) {
    const FusedWeight fw = Fused(w);
    StagedGemv& g = staged_;
    if (!GemvJoinsGroup(g, fw, x, n, options_.fuse)) {
      PushStaged();
      g.x = x;
      g.n = n;
    }
    g.w[g.count] = fw;
    g.out[g.count] = out;
    ++g.count;
    if (!options_.fuse) PushStaged();
    return;
  }
  Gemm(w, x, n, out);
}

void CudaBackend::AddBias(float* x, const WeightTensor& bias, int n) {
  const auto* b = static_cast<const float*>(bias.data);
  const int d = static_cast<int>(bias.cols);
  PushOp({kOpBias, W(x), W(b), W(n), W(d)}, [=, this] { Check(k::AddBias(x, b, n, d, stream_)); });
}

void CudaBackend::Rope(float* x, const int32_t* positions, int n, int heads, int head_dim,
                       const RopeConfig& rope) {
  const int32_t* dp = Device(positions, host_positions_, layout_.positions, n);
  const RopeParams args{rope.rope_dim, rope.freq_base, rope.freq_scale, rope.freq_factors,
                        rope.style == RopeStyle::kHalves};
  StagedRope& r = staged_rope_;
  if (RopeJoinsPair(r, x, dp, n, head_dim, args)) {
    // Q then K of the same tokens: one launch, still staged (the KV write of K may join).
    r.b = x;
    r.heads_b = heads;
    return;
  }
  PushStaged();
  r = {x, heads, nullptr, 0, dp, n, head_dim, args};
  if (!options_.fuse) PushStaged();
}

void CudaBackend::KvWrite(const float* kk, const float* v, const AttentionLayout& layout,
                          int kv_dim, float* k_cache, float* v_cache) {
  if (!LayoutReady(layout)) return;
  const k::DeviceLayout l = layout_;
  const bool half = options_.kv_f16;
  const StagedRope r = staged_rope_;
  if (RopeFusesIntoKvWrite(r, kk, l.positions, l.num_tokens, kv_dim)) {
    // RoPE of Q and K, then K and V into the cache: one kernel per step and layer.
    staged_rope_ = {};
    const k::RopeArgs rope = Dev(r.rope);
    PushOp({kOpRopeKvWrite,
            W(r.a),
            W(r.heads),
            W(r.b),
            W(r.heads_b),
            W(v),
            W(l.positions),
            W(l.block_tables),
            W(l.max_blocks_per_seq),
            W(l.block_size),
            W(l.num_tokens),
            W(r.head_dim),
            W(r.rope.rope_dim),
            W(r.rope.freq_base),
            W(r.rope.freq_scale),
            W(r.rope.freq_factors),
            W(r.rope.halves),
            W(half),
            W(k_cache),
            W(v_cache)},
           [=, this] {
             Check(k::RopeKvWrite(r.a, r.heads, r.b, r.heads_b, v, l, r.head_dim, rope, half,
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
void CudaBackend::Attention(const float* q, const float* k_cache, const float* v_cache,
                            const AttentionLayout& layout, int heads, int kv_heads, int head_dim,
                            float scale, float* out) {
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
           Check(k::TiledAttention(q, k_cache, v_cache, half, l, tiles, num_tiles, heads, kv_heads,
                                   head_dim, scale, out, stream_));
           Check(k::Attention(q, k_cache, v_cache, half, l, rows, num_rows, heads, kv_heads,
                              head_dim, scale, splits, scratch, out, stream_));
         });
}

void CudaBackend::SwiGlu(const float* gate, const float* up, int n, int d, float* out) {
  const int64_t count = static_cast<int64_t>(n) * d;
  const StagedGemv& g = staged_;
  if (SwiGluFusesIntoGemv(g, gate, up, n, d, out) &&
      k::GemvSwiGluSupported(Dev(g.w[0]), Dev(g.w[1]), g.x)) {
    // The gate/up group just recorded feeds this SwiGLU: apply it in the GEMV's epilogue.
    const k::DeviceWeight wg = Dev(g.w[0]), wu = Dev(g.w[1]);
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
void CudaBackend::Add(float* x, const float* y, int64_t count) {
  PushStaged();
  staged_add_ = {x, y, count};
  if (!options_.fuse) PushStaged();
}

void CudaBackend::GatherRows(const float* x, const int32_t* rows, int m, int d, float* out) {
  const int32_t* dr = Device(rows, host_rows_, dev_rows_, m);
  PushOp({kOpGather, W(x), W(dr), W(m), W(d), W(out)},
         [=, this] { Check(k::GatherRows(x, dr, m, d, out, stream_)); });
}

void CudaBackend::PushStaged() {
  if (staged_add_.x != nullptr) {
    const StagedAdd a = staged_add_;
    staged_add_ = {};
    tape_.Push({kOpAdd, W(a.x), W(a.y), W(a.count)},
               [=, this] { Check(k::Add(a.x, a.y, a.count, stream_)); });
  }
  if (staged_rope_.a != nullptr) {
    const StagedRope r = staged_rope_;
    staged_rope_ = {};
    const k::RopeArgs rope = Dev(r.rope);
    tape_.Push({kOpRope, W(r.a), W(r.heads), W(r.b), W(r.heads_b), W(r.positions), W(r.n),
                W(r.head_dim), W(r.rope.rope_dim), W(r.rope.freq_base), W(r.rope.freq_scale),
                W(r.rope.freq_factors), W(r.rope.halves)},
               [=, this] {
                 Check(k::RopePair(r.a, r.heads, r.b, r.heads_b, r.positions, r.n, r.head_dim, rope,
                                   stream_));
               });
  }
  PushStagedGemv();
}

void CudaBackend::PushStagedGemv() {
  if (staged_.count == 0) return;
  const StagedGemv g = staged_;
  staged_.count = 0;
  uint64_t words[2 * kMaxFusedGemvs] = {};
  for (int i = 0; i < g.count; ++i) {
    words[2 * i] = W(g.w[i].data);
    words[2 * i + 1] = W(g.out[i]);
  }
  static_assert(kMaxFusedGemvs == 3);
  // What the launch needs, in the kernels' types.
  const k::DeviceWeight w[kMaxFusedGemvs] = {Dev(g.w[0]), Dev(g.w[1]), Dev(g.w[2])};
  float* const out[kMaxFusedGemvs] = {g.out[0], g.out[1], g.out[2]};
  const int count = g.count, n = g.n;
  const float* x = g.x;
  tape_.Push(
      {kOpGemv, W(count), W(x), W(n), words[0], words[1], words[2], words[3], words[4], words[5]},
      [=, this] { Check(k::GemvGroup(w, out, count, x, n, stream_)); });
}

}  // namespace chorus::cuda_internal
