#include "chorus/kv_cache/block_manager.h"

#include <algorithm>

#include "chorus/core/status.h"

namespace chorus {

BlockManager::BlockManager(int num_blocks, int block_size, bool prefix_cache)
    : block_size_(block_size),
      prefix_cache_(prefix_cache),
      refs_(num_blocks, 0),
      hash_of_(num_blocks, 0),
      tokens_of_(prefix_cache ? static_cast<size_t>(num_blocks) * block_size : 0),
      parent_of_(num_blocks, -1),
      parent_gen_(num_blocks, 0),
      gen_(num_blocks, 0),
      lru_pos_(num_blocks),
      in_lru_(num_blocks, false) {
  for (int32_t b = num_blocks - 1; b >= 0; --b) free_.push_back(b);
}

int32_t BlockManager::Allocate() {
  int32_t b;
  if (!free_.empty()) {
    b = free_.back();
    free_.pop_back();
  } else if (!lru_.empty()) {
    b = lru_.front();
    lru_.pop_front();
    in_lru_[b] = false;
    by_hash_.erase(hash_of_[b]);
    hash_of_[b] = 0;
  } else {
    return -1;
  }
  refs_[b] = 1;
  ++gen_[b];  // a new life: blocks published as its children no longer follow it
  return b;
}

void BlockManager::Ref(int32_t block) {
  CHORUS_CHECK(refs_[block] > 0);
  ++refs_[block];
}

void BlockManager::Unref(int32_t block) {
  CHORUS_CHECK(refs_[block] > 0);
  if (--refs_[block] > 0) return;
  if (hash_of_[block] != 0) {
    lru_.push_back(block);
    lru_pos_[block] = std::prev(lru_.end());
    in_lru_[block] = true;
  } else {
    free_.push_back(block);
  }
}

uint64_t BlockManager::ChainHash(uint64_t prev, const int32_t* tokens, int n) {
  uint64_t h = prev ^ 0x9e3779b97f4a7c15ull;
  for (int i = 0; i < n; ++i) {
    h ^= static_cast<uint32_t>(tokens[i]);
    h *= 0x100000001b3ull;  // FNV-style mixing
    h ^= h >> 29;
  }
  return h == 0 ? 1 : h;
}

uint64_t BlockManager::SaltKey(std::string_view salt) {
  if (salt.empty()) return 0;
  uint64_t h = 0xcbf29ce484222325ull;  // FNV-1a, then a final mix
  for (char c : salt) {
    h ^= static_cast<uint8_t>(c);
    h *= 0x100000001b3ull;
  }
  h ^= h >> 31;
  h *= 0x9e3779b97f4a7c15ull;
  h ^= h >> 29;
  return h == 0 ? 1 : h;
}

int32_t BlockManager::Lookup(uint64_t hash, const int32_t* tokens, int32_t parent, uint64_t salt) {
  if (!prefix_cache_) return -1;
  auto it = by_hash_.find(hash);
  if (it == by_hash_.end()) return -1;
  const int32_t b = it->second;
  const uint64_t want_gen = parent >= 0 ? gen_[parent] : salt;
  const int32_t* held = tokens_of_.data() + static_cast<size_t>(b) * block_size_;
  if (parent_of_[b] != parent || parent_gen_[b] != want_gen ||
      !std::equal(held, held + block_size_, tokens)) {
    return -1;  // a hash collision (or a stale chain): compute it, never share it
  }
  if (in_lru_[b]) {
    lru_.erase(lru_pos_[b]);
    in_lru_[b] = false;
    refs_[b] = 1;
  } else {
    ++refs_[b];
  }
  return b;
}

void BlockManager::Publish(int32_t block, uint64_t hash, const int32_t* tokens, int32_t parent,
                           uint64_t salt) {
  if (!prefix_cache_ || hash_of_[block] != 0 || by_hash_.count(hash)) return;
  hash_of_[block] = hash;
  by_hash_[hash] = block;
  std::copy(tokens, tokens + block_size_,
            tokens_of_.data() + static_cast<size_t>(block) * block_size_);
  parent_of_[block] = parent;
  parent_gen_[block] = parent >= 0 ? gen_[parent] : salt;
}

}  // namespace chorus
