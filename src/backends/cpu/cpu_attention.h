// CPU attention over a paged KV cache (internal to the CPU backend).
#pragma once

#include "chorus/backends/backend.h"
#include "chorus/core/thread_pool.h"

namespace chorus::cpu {

// Cache row of `pos` in the sequence of token t: block_tables[seq][pos / bs] * bs + pos % bs.
inline int64_t CacheSlot(const AttentionLayout& l, int t, int pos) {
  const int32_t* table =
      l.block_tables + static_cast<int64_t>(l.seq_of_token[t]) * l.max_blocks_per_seq;
  return static_cast<int64_t>(table[pos / l.block_size]) * l.block_size + pos % l.block_size;
}

void Attention(ThreadPool& pool, const float* q, const float* k_cache, const float* v_cache,
               const AttentionLayout& layout, int heads, int kv_heads, int head_dim, float scale,
               float* out);

}  // namespace chorus::cpu
