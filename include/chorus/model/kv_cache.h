// Paged KV cache storage: per layer, K and V tensors of [num_blocks, block_size, kv_dim] floats
// in backend memory, plus the block allocator that hands out block ids (refcounted, free list;
// bookkeeping only, no tensors). Owned and used by the engine thread only (not thread-safe).
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "chorus/backends/backend.h"
#include "chorus/model/hparams.h"

namespace chorus {

class BlockAllocator {
 public:
  explicit BlockAllocator(int num_blocks);
  // A free block with refcount 1, or -1 when none is free.
  int32_t Allocate();
  void Ref(int32_t block);
  // Drops one reference; the block returns to the free list at zero.
  void Unref(int32_t block);
  int refcount(int32_t block) const { return refs_[block]; }
  int num_free() const { return static_cast<int>(free_.size()); }
  int num_blocks() const { return static_cast<int>(refs_.size()); }

 private:
  std::vector<int> refs_;
  std::vector<int32_t> free_;
};

class KvCache {
 public:
  static absl::StatusOr<std::unique_ptr<KvCache>> Create(Backend* backend,
                                                         const ModelConfig& config,
                                                         int num_blocks, int block_size);
  float* k(int layer) { return k_[layer]->f32(); }
  float* v(int layer) { return v_[layer]->f32(); }
  int num_blocks() const { return num_blocks_; }
  int block_size() const { return block_size_; }
  BlockAllocator& allocator() { return allocator_; }

 private:
  KvCache(int num_blocks, int block_size)
      : num_blocks_(num_blocks), block_size_(block_size), allocator_(num_blocks) {}
  int num_blocks_;
  int block_size_;
  BlockAllocator allocator_;
  std::vector<std::unique_ptr<BackendBuffer>> k_, v_;
};

}  // namespace chorus
