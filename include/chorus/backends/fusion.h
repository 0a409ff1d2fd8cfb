// The CUDA backend's fusion rules, kept free of CUDA so that they are unit-tested on every machine
// (tests/backends/fusion_test.cc). With CudaBackendOptions::fuse the backend stages some ops
// instead of recording them at once, and merges the next op into the staged one when a rule
// below allows it (fewer launches, same results):
//   GEMV group       decode GEMVs that read the same input with weights of one type and width
//                    (Q, K, V; gate, up): one launch for up to kMaxFusedGemvs of them;
//   GEMV + SwiGLU    a staged gate/up pair whose outputs feed the next SwiGLU applies it in the
//                    GEMV's epilogue (when the kernel also supports the weights);
//   Add + RMSNorm    a staged residual add followed by the RMSNorm of its result: one kernel;
//   RoPE pair        RoPE of Q, then of K of the same tokens and rotation: one launch;
//   RoPE + KV write  a staged Q/K RoPE pair followed by the cache write of that K: one kernel.
// At most one op is staged at a time; any other op records the staged one first (program order
// is kept). Pointers are device memory; the rules only compare them.
#pragma once

#include <cstdint>

namespace chorus {

// The most GEMVs one grouped launch takes (kernels::kMaxGemvGroup; the backend checks).
inline constexpr int kMaxFusedGemvs = 3;

// The weight of a staged GEMV (the fields of kernels::DeviceWeight).
struct FusedWeight {
  int type = 0;  // ggml type id
  int64_t rows = 0, cols = 0, row_bytes = 0;
  const void* data = nullptr;
};

// Decode GEMVs staged as one group: out[i][n, w[i].rows] = x[n, cols] * w[i]^T.
struct StagedGemv {
  int count = 0;  // 0: nothing staged
  FusedWeight w[kMaxFusedGemvs];
  float* out[kMaxFusedGemvs] = {};
  const float* x = nullptr;
  int n = 0;
};

// A staged residual add: x[count] += y.
struct StagedAdd {
  float* x = nullptr;  // null: nothing staged
  const float* y = nullptr;
  int64_t count = 0;
};

// Rotary parameters of a staged RoPE (the fields of kernels::RopeArgs).
struct RopeParams {
  int rope_dim = 0;
  float freq_base = 0.0f;
  float freq_scale = 0.0f;
  const float* freq_factors = nullptr;
  bool halves = false;
};

// A staged RoPE of `a` [n, heads * head_dim] (Q, or a lone tensor) and, once it joined, of `b`
// [n, heads_b * head_dim] (K of the same tokens).
struct StagedRope {
  float* a = nullptr;  // null: nothing staged
  int heads = 0;
  float* b = nullptr;  // null: no K joined
  int heads_b = 0;
  const int32_t* positions = nullptr;
  int n = 0, head_dim = 0;
  RopeParams rope;
};

// Every field equal (a rotation the same launch can apply to both tensors).
bool SameRope(const RopeParams& a, const RopeParams& b);

// Whether the GEMV of weight `w` over x[n, w.cols] joins the staged group `g` (false: the group
// is recorded and this GEMV starts a new one). Needs fusion on, a group of fewer than
// kMaxFusedGemvs, the same input and row count, and a weight of the first one's type and width.
bool GemvJoinsGroup(const StagedGemv& g, const FusedWeight& w, const float* x, int n, bool fuse);

// Whether out[n, d] = silu(gate) * up can run in the epilogue of the staged group `g`: exactly a
// gate/up pair writing `gate` and `up`, SwiGLU in place into gate, n rows, d = the gate's rows.
// The caller also asks the kernel whether it supports the two weights.
bool SwiGluFusesIntoGemv(const StagedGemv& g, const float* gate, const float* up, int n, int d,
                         const float* out);

// Whether the RMSNorm of x[n, d] into `out` takes the staged add `a` in front: the add wrote
// exactly x[n, d], and the norm does not overwrite x (the add's result stays the residual).
bool AddFusesIntoRmsNorm(const StagedAdd& a, const float* x, int n, int d, const float* out);

// Whether the RoPE of x [n, heads * head_dim] joins the staged RoPE `r` as its second tensor:
// a lone tensor is staged, x is another one, and positions, rows, head size and rotation match.
bool RopeJoinsPair(const StagedRope& r, const float* x, const int32_t* positions, int n,
                   int head_dim, const RopeParams& rope);

// Whether the KV write of k [num_tokens, kv_dim] takes the staged RoPE pair `r` in front: k is
// the pair's second tensor, and positions, rows and width match the write's.
bool RopeFusesIntoKvWrite(const StagedRope& r, const float* k, const int32_t* positions,
                          int num_tokens, int kv_dim);

}  // namespace chorus
