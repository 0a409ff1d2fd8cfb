#include "chorus/backends/fusion.h"

namespace chorus {

bool SameRope(const RopeParams& a, const RopeParams& b) {
  return a.rope_dim == b.rope_dim && a.freq_base == b.freq_base && a.freq_scale == b.freq_scale &&
         a.freq_factors == b.freq_factors && a.halves == b.halves;
}

bool GemvJoinsGroup(const StagedGemv& g, const FusedWeight& w, const float* x, int n, bool fuse) {
  return fuse && g.count > 0 && g.count < kMaxFusedGemvs && g.x == x && g.n == n &&
         g.w[0].type == w.type && g.w[0].cols == w.cols;
}

bool SwiGluFusesIntoGemv(const StagedGemv& g, const float* gate, const float* up, int n, int d,
                         const float* out) {
  return g.count == 2 && g.out[0] == gate && g.out[1] == up && out == gate && g.n == n &&
         g.w[0].rows == d;
}

bool AddFusesIntoRmsNorm(const StagedAdd& a, const float* x, int n, int d, const float* out) {
  return a.x == x && a.count == static_cast<int64_t>(n) * d && x != out;
}

bool RopeJoinsPair(const StagedRope& r, const float* x, const int32_t* positions, int n,
                   int head_dim, const RopeParams& rope) {
  return r.a != nullptr && r.b == nullptr && r.positions == positions && r.n == n &&
         r.head_dim == head_dim && SameRope(r.rope, rope) && r.a != x;
}

bool RopeFusesIntoKvWrite(const StagedRope& r, const float* k, const int32_t* positions,
                          int num_tokens, int kv_dim) {
  return r.b == k && r.b != nullptr && r.positions == positions && r.n == num_tokens &&
         r.heads_b * r.head_dim == kv_dim;
}

}  // namespace chorus
