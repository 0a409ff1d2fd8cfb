// KV block bookkeeping (no tensors): refcounted blocks, a free list, and a prefix cache that
// maps the hash chain of a full block's tokens (and every token before it) to the block that
// holds its KV. Blocks whose refcount drops to zero stay cached (LRU) and are evicted only when
// the free list is empty. Engine thread only (not thread-safe).
#pragma once

#include <cstdint>
#include <list>
#include <unordered_map>
#include <vector>

namespace chorus {

class BlockManager {
 public:
  BlockManager(int num_blocks, int block_size, bool prefix_cache);

  int num_blocks() const { return static_cast<int>(refs_.size()); }
  int block_size() const { return block_size_; }
  // Blocks that Allocate can still hand out (free + cached-idle).
  int num_available() const { return static_cast<int>(free_.size() + lru_.size()); }
  // Blocks referenced by at least one sequence.
  int num_used() const { return num_blocks() - num_available(); }
  // Unreferenced blocks kept for prefix reuse.
  int num_cached_idle() const { return static_cast<int>(lru_.size()); }

  // A block with refcount 1 (evicting the least recently used cached block when the free
  // list is empty), or -1 when every block is referenced.
  int32_t Allocate();
  void Ref(int32_t block);
  void Unref(int32_t block);
  int refcount(int32_t block) const { return refs_[block]; }

  // Hash of a full block of tokens, chained to the previous block's hash (0 for the first).
  static uint64_t ChainHash(uint64_t prev, const int32_t* tokens, int n);
  // The cached block for `hash` with one more reference, or -1.
  int32_t Lookup(uint64_t hash);
  // Records that `block` (fully computed) holds the tokens of `hash`.
  void Publish(int32_t block, uint64_t hash);

 private:
  const int block_size_;
  const bool prefix_cache_;
  std::vector<int> refs_;
  std::vector<int32_t> free_;
  std::unordered_map<uint64_t, int32_t> by_hash_;
  std::vector<uint64_t> hash_of_;  // 0 = none
  std::list<int32_t> lru_;         // unreferenced cached blocks, oldest first
  std::vector<std::list<int32_t>::iterator> lru_pos_;
  std::vector<bool> in_lru_;
};

}  // namespace chorus
