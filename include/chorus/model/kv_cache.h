// Paged KV cache storage: per layer, K and V tensors of [num_blocks, block_size, kv_dim] floats
// in backend memory. Which block belongs to whom is kv_cache/block_manager.h's business.
// Owned and used by the engine thread only (not thread-safe).
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "chorus/backends/backend.h"
#include "chorus/model/hparams.h"

namespace chorus {

class KvCache {
 public:
  static absl::StatusOr<std::unique_ptr<KvCache>> Create(Backend* backend,
                                                         const ModelConfig& config, int num_blocks,
                                                         int block_size);
  // The layer's caches (values of backend->KvBytesPerValue() bytes; see Backend::KvWrite).
  float* k(int layer) { return k_[layer]->f32(); }
  float* v(int layer) { return v_[layer]->f32(); }
  int num_blocks() const { return num_blocks_; }
  int block_size() const { return block_size_; }
  // Copies block src's K and V (every layer) into block dst: copy-on-write at a fork.
  void CopyBlock(int32_t src, int32_t dst);

 private:
  KvCache(Backend* backend, int num_blocks, int block_size, int kv_dim)
      : backend_(backend), num_blocks_(num_blocks), block_size_(block_size), kv_dim_(kv_dim) {}
  Backend* backend_;
  int num_blocks_;
  int block_size_;
  int kv_dim_;
  std::vector<std::unique_ptr<BackendBuffer>> k_, v_;
};

}  // namespace chorus
