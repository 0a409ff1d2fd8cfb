// Launchers for Chorus's CUDA kernels. Each takes a stream, checks its arguments, launches,
// checks cudaGetLastError and returns it; none synchronizes. Pointers are device memory unless
// the comment says host. Shapes are row-major, innermost last. Weight types use ggml's ids
// (F32 0, F16 1, Q4_0 2, Q4_1 3, Q5_0 6, Q5_1 7, Q8_0 8, Q4_K 12, Q5_K 13, Q6_K 14, BF16 30);
// Q8_0 / Q4_0 / Q4_1 / Q5_0 / Q5_1 blocks are 34 / 18 / 20 / 22 / 24 bytes per 32 values,
// Q4_K / Q5_K / Q6_K super-blocks 144 / 176 / 210 bytes per 256 (BlockBytes, BlockValues).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace chorus::kernels {

enum WeightType : int {
  kF32 = 0,
  kF16 = 1,
  kQ4_0 = 2,
  kQ4_1 = 3,
  kQ5_0 = 6,
  kQ5_1 = 7,
  kQ8_0 = 8,
  kQ4_K = 12,
  kQ5_K = 13,
  kQ6_K = 14,
  kBF16 = 30,
  // The CUDA backend's own layouts (not ggml ids): Q4_0 / Q8_0 rows regrouped at load
  // (RepackForGemv) so that a GEMV lane reads 16 aligned bytes at a time. Per 256 values: the 8
  // block scales (half, 16 bytes), then the 8 blocks' quants (128 / 256 bytes, each block's as
  // in ggml). As many bytes per row as ggml's layout.
  kQ4_0R = 102,
  kQ8_0R = 108
};

#if defined(__CUDACC__)
#define CHORUS_HOST_DEVICE __host__ __device__
#else
#define CHORUS_HOST_DEVICE
#endif

// Values per block and bytes per block of a weight type (0 for unknown ids).
CHORUS_HOST_DEVICE constexpr int BlockValues(int t) {
  return t == kQ4_K || t == kQ5_K || t == kQ6_K || t == kQ4_0R || t == kQ8_0R ? 256
         : t == kQ4_0 || t == kQ4_1 || t == kQ5_0 || t == kQ5_1 || t == kQ8_0 ? 32
                                                                              : 1;
}
CHORUS_HOST_DEVICE constexpr int BlockBytes(int t) {
  switch (t) {
    case kF32: return 4;
    case kF16: case kBF16: return 2;
    case kQ4_0: return 18;
    case kQ4_1: return 20;
    case kQ5_0: return 22;
    case kQ5_1: return 24;
    case kQ8_0: return 34;
    case kQ4_K: return 144;
    case kQ5_K: return 176;
    case kQ6_K: return 210;
    case kQ4_0R: return 144;
    case kQ8_0R: return 272;
    default: return 0;
  }
}
// Types whose GEMV reads values one at a time through WeightAt (no vectorized chunk loader yet).
CHORUS_HOST_DEVICE constexpr bool ScalarChunkType(int t) {
  return t == kQ4_1 || t == kQ5_0 || t == kQ5_1 || t == kQ4_K || t == kQ5_K || t == kQ6_K;
}

// The regrouped id for a ggml Q4_0 / Q8_0 weight `cols` wide (cols % 256 == 0), else -1.
CHORUS_HOST_DEVICE constexpr int RepackedType(int t, int64_t cols) {
  return cols % 256 != 0 ? -1 : t == kQ4_0 ? kQ4_0R : t == kQ8_0 ? kQ8_0R : -1;
}

// A weight matrix [rows, cols] of `type`, each row row_bytes long.
struct DeviceWeight {
  int type;
  int64_t rows, cols, row_bytes;
  const void* data;
};

// Paged KV layout of one forward (device arrays).
struct DeviceLayout {
  int num_tokens;
  const int32_t* positions;     // [num_tokens]
  const int32_t* seq_of_token;  // [num_tokens]
  const int32_t* block_tables;  // [num_seqs, max_blocks_per_seq]
  int max_blocks_per_seq;
  int block_size;
};

// Rotary embedding parameters (backend.h RopeConfig): pair i at position p rotates by
// p * freq_scale * freq_base^(-2i / rope_dim) / freq_factors[i] (freq_factors: device
// [rope_dim / 2] or nullptr); halves: pairs (i, i + rope_dim / 2) instead of (2i, 2i + 1).
struct RopeArgs {
  int rope_dim;
  float freq_base;
  float freq_scale;
  const float* freq_factors;
  bool halves;
};

constexpr int kMaxHeadDim = 256;
constexpr int kAttentionChunk = 256;  // positions per split (flash-decoding partitions)

cudaError_t Embed(const DeviceWeight& table, const int32_t* tokens, int n, float* out,
                  cudaStream_t s);
cudaError_t RmsNorm(const float* x, const float* w, int n, int d, float eps, float* out,
                    cudaStream_t s);
// x[n, d] += y, then out = RmsNorm(x) (the residual add fused in front of the next norm).
cudaError_t AddRmsNorm(float* x, const float* y, const float* w, int n, int d, float eps,
                       float* out, cudaStream_t s);
cudaError_t Rope(float* x, const int32_t* positions, int n, int heads, int head_dim,
                 const RopeArgs& rope, cudaStream_t s);
// RoPE of Q [n, heads_q * head_dim] and K [n, heads_k * head_dim], then K and V written into
// the paged caches (kv_dim = heads_k * head_dim): one block per token.
cudaError_t RopeKvWrite(float* q, int heads_q, float* k, int heads_k, const float* v,
                        const DeviceLayout& layout, int head_dim, const RopeArgs& rope,
                        bool half_kv, void* k_cache, void* v_cache, cudaStream_t s);
// RoPE of two tensors of the same tokens in one launch (Q [n, heads_a * head_dim] and K).
cudaError_t RopePair(float* a, int heads_a, float* b, int heads_b, const int32_t* positions, int n,
                     int head_dim, const RopeArgs& rope, cudaStream_t s);
cudaError_t AddBias(float* x, const float* bias, int n, int d, cudaStream_t s);
cudaError_t SwiGlu(const float* gate, const float* up, int64_t count, float* out, cudaStream_t s);
cudaError_t Add(float* x, const float* y, int64_t count, cudaStream_t s);
cudaError_t GatherRows(const float* x, const int32_t* rows, int m, int d, float* out,
                       cudaStream_t s);
// K/V caches are [blocks, block_size, kv_dim] of float, or of half when `half_kv` (the
// backend's choice: half the memory and half the attention reads).
cudaError_t KvWrite(const float* k, const float* v, const DeviceLayout& layout, int kv_dim,
                    bool half_kv, void* k_cache, void* v_cache, cudaStream_t s);
// Causal paged attention, split over `num_splits` chunks of kAttentionChunk positions
// (flash-decoding), then merged, for the batch rows listed in `rows` (device [num_rows]; null:
// rows 0 .. num_rows - 1). Splits past a row's position contribute nothing, so num_splits may be
// rounded up. scratch: [num_rows, heads, num_splits, head_dim + 2] floats.
cudaError_t Attention(const float* q, const void* k_cache, const void* v_cache, bool half_kv,
                      const DeviceLayout& layout, const int32_t* rows, int num_rows, int heads,
                      int kv_heads, int head_dim, float scale, int num_splits, float* scratch,
                      float* out, cudaStream_t s);
// Tiled causal attention for prefill: `tiles` (device [num_tiles, 2]: first row, count <=
// kQueryTile) are runs of rows of one sequence at consecutive positions; a block stages
// kKeyTile keys and values of the tile's sequence in shared memory and every query of the tile
// reads them there (online softmax). head_dim <= kMaxTiledHeadDim.
constexpr int kQueryTile = 16;
constexpr int kKeyTile = 32;
constexpr int kMaxTiledHeadDim = 128;
cudaError_t TiledAttention(const float* q, const void* k_cache, const void* v_cache, bool half_kv,
                           const DeviceLayout& layout, const int32_t* tiles, int num_tiles,
                           int heads, int kv_heads, int head_dim, float scale, float* out,
                           cudaStream_t s);
// out[t, r] = dot(row r of w, x[t]) for t < n <= kMaxGemvTokens: dequantize-and-dot GEMV.
// A warp owns 1 row (n <= 2) or 4 rows; when that gives too few blocks to fill the device
// (GemvSplit: fewer than 4 per SM), the warps of a block also split each row's columns and add
// their partial sums in shared memory (split-K inside the block, deterministic).
constexpr int kMaxGemvTokens = 8;
// Warps per row (1, 2, 4 or 8) the GEMV of these weights at n tokens uses on a device of `sms`
// multiprocessors (host function; the launcher asks the device for sms).
int GemvSplit(const DeviceWeight* w, int count, int n, int sms);
// Regroups a ggml Q4_0 / Q8_0 weight in place into its RepackedType layout (w.type must be the
// ggml type and RepackedType(w.type, w.cols) valid); the caller then reads it as the new type.
cudaError_t RepackForGemv(const DeviceWeight& w, cudaStream_t s);
cudaError_t Gemv(const DeviceWeight& w, const float* x, int n, float* out, cudaStream_t s);
// The same for up to kMaxGemvGroup weights of one type and width that read the same x (Q, K and
// V; gate and up) in one launch: out[i][t, r] = dot(row r of w[i], x[t]).
constexpr int kMaxGemvGroup = 3;
cudaError_t GemvGroup(const DeviceWeight* w, float* const* out, int count, const float* x, int n,
                      cudaStream_t s);
// Gate and up GEMVs with SwiGLU applied on the way out: out_up = up(x), out_gate =
// silu(gate(x)) * out_up. Both weights of one type and shape, rows aligned for vector loads
// (GemvSwiGluSupported; host-side check).
bool GemvSwiGluSupported(const DeviceWeight& gate, const DeviceWeight& up, const float* x);
cudaError_t GemvSwiGlu(const DeviceWeight& gate, const DeviceWeight& up, const float* x, int n,
                       float* out_gate, float* out_up, cudaStream_t s);
// Dequantizes rows [0, w.rows) of w into dst ([rows, cols] half precision, for GEMM).
cudaError_t DequantizeToHalf(const DeviceWeight& w, void* dst_half, cudaStream_t s);
// float -> half / bfloat16 conversion of activations (count values).
cudaError_t FloatToHalf(const float* x, int64_t count, void* dst, cudaStream_t s);
cudaError_t FloatToBf16(const float* x, int64_t count, void* dst, cudaStream_t s);

// One sampling draw: the rule of sampling/sampler.h after penalties; `uniform` in [0, 1) is drawn
// by the caller's per-sequence RNG; `row` picks the logits row (draws may share a row).
struct SamplingRow {
  float temperature;  // <= 0: greedy
  int top_k;          // 0: off
  float top_p;        // 1: off
  float min_p;        // 0: off
  double uniform;
  int32_t row;
};
// tokens[i], logprobs[i] (log softmax of the raw logits) for each of `draws` draws from logits
// [num_rows, vocab]; a draw's row must be in [0, num_rows) (the caller checks).
cudaError_t SampleRows(const float* logits, int vocab, const SamplingRow* params, int draws,
                       int32_t* tokens, float* logprobs, cudaStream_t s);

}  // namespace chorus::kernels
