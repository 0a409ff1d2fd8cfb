#include "chorus/model/kv_cache.h"

#include "chorus/core/status.h"
#include "chorus/core/str_cat.h"

namespace chorus {

absl::StatusOr<std::unique_ptr<KvCache>> KvCache::Create(Backend* backend,
                                                         const ModelConfig& config, int num_blocks,
                                                         int block_size) {
  if (num_blocks < 1 || block_size < 1) {
    return absl::InvalidArgumentError(StrCat("kv cache: num_blocks ", num_blocks,
                                             " and block_size ", block_size, " must be >= 1"));
  }
  std::unique_ptr<KvCache> kv(new KvCache(backend, num_blocks, block_size, config.kv_dim()));
  const size_t bytes =
      static_cast<size_t>(num_blocks) * block_size * config.kv_dim() * backend->KvBytesPerValue();
  for (int l = 0; l < config.n_layers; ++l) {
    CHORUS_ASSIGN_OR_RETURN(auto k, backend->Alloc(bytes));
    CHORUS_ASSIGN_OR_RETURN(auto v, backend->Alloc(bytes));
    kv->k_.push_back(std::move(k));
    kv->v_.push_back(std::move(v));
  }
  return kv;
}

void KvCache::CopyBlock(int32_t src, int32_t dst) {
  const size_t bytes = static_cast<size_t>(block_size_) * kv_dim_ * backend_->KvBytesPerValue();
  for (size_t l = 0; l < k_.size(); ++l) {
    for (auto* cache : {k_[l].get(), v_[l].get()}) {
      char* base = static_cast<char*>(cache->data());
      backend_->Copy(base + dst * bytes, base + src * bytes, bytes);
    }
  }
}

}  // namespace chorus
