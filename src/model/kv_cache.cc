#include "chorus/model/kv_cache.h"

#include "chorus/core/status.h"
#include "chorus/core/str_cat.h"

namespace chorus {

BlockAllocator::BlockAllocator(int num_blocks) : refs_(num_blocks, 0) {
  free_.reserve(num_blocks);
  for (int32_t b = num_blocks - 1; b >= 0; --b) free_.push_back(b);
}

int32_t BlockAllocator::Allocate() {
  if (free_.empty()) return -1;
  const int32_t b = free_.back();
  free_.pop_back();
  refs_[b] = 1;
  return b;
}

void BlockAllocator::Ref(int32_t block) {
  CHORUS_CHECK(refs_[block] > 0);
  ++refs_[block];
}

void BlockAllocator::Unref(int32_t block) {
  CHORUS_CHECK(refs_[block] > 0);
  if (--refs_[block] == 0) free_.push_back(block);
}

absl::StatusOr<std::unique_ptr<KvCache>> KvCache::Create(Backend* backend,
                                                         const ModelConfig& config,
                                                         int num_blocks, int block_size) {
  if (num_blocks < 1 || block_size < 1) {
    return absl::InvalidArgumentError(
        StrCat("kv cache: num_blocks ", num_blocks, " and block_size ", block_size, " must be >= 1"));
  }
  std::unique_ptr<KvCache> kv(new KvCache(num_blocks, block_size));
  const size_t bytes = static_cast<size_t>(num_blocks) * block_size * config.kv_dim() * 4;
  for (int l = 0; l < config.n_layers; ++l) {
    CHORUS_ASSIGN_OR_RETURN(auto k, backend->Alloc(bytes));
    CHORUS_ASSIGN_OR_RETURN(auto v, backend->Alloc(bytes));
    kv->k_.push_back(std::move(k));
    kv->v_.push_back(std::move(v));
  }
  return kv;
}

}  // namespace chorus
