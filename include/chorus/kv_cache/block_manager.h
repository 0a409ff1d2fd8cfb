// KV block bookkeeping (no tensors): refcounted blocks, a free list, and a prefix cache that
// finds the block holding the KV of a full block of tokens after a given prefix. The 64-bit
// chain hash only indexes the cache: a hit also compares the block's tokens and its parent
// (the previous block of the chain, which must not have been reused since; the first block
// compares the request's cache salt), so a hash collision is a miss, never another request's
// KV (issue 11, finding 3). Blocks whose refcount drops to zero stay cached (LRU) and are
// evicted only when the free list is empty. Engine thread only (not thread-safe).
#pragma once

#include <cstdint>
#include <list>
#include <string_view>
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

  // Key of a request's cache salt (0 for none): the seed of its hash chain, so requests with
  // different salts never share cached blocks.
  static uint64_t SaltKey(std::string_view salt);
  // Hash of a full block of tokens, chained to the previous block's hash (the salt key for
  // the first).
  static uint64_t ChainHash(uint64_t prev, const int32_t* tokens, int n);
  // The cached block under `hash` with one more reference, if it holds exactly `tokens`
  // (block_size of them) after `parent` (the block found for the previous block of the chain;
  // -1 for the first, which must carry `salt`); else -1.
  int32_t Lookup(uint64_t hash, const int32_t* tokens, int32_t parent, uint64_t salt);
  // Records that `block` (fully computed) holds `tokens` after `parent` (-1: the first block,
  // of a request with `salt`), found under `hash`. A hash already taken is left as it is.
  void Publish(int32_t block, uint64_t hash, const int32_t* tokens, int32_t parent, uint64_t salt);

 private:
  const int block_size_;
  const bool prefix_cache_;
  std::vector<int> refs_;
  std::vector<int32_t> free_;
  std::unordered_map<uint64_t, int32_t> by_hash_;
  std::vector<uint64_t> hash_of_;  // 0 = none
  // What a cached block holds, checked on every hit.
  std::vector<int32_t> tokens_of_;    // [num_blocks, block_size] (prefix cache only)
  std::vector<int32_t> parent_of_;    // previous block of its chain, -1 for the first
  std::vector<uint64_t> parent_gen_;  // the parent's generation when published (first: salt)
  std::vector<uint64_t> gen_;         // bumped each time a block is handed out
  std::list<int32_t> lru_;            // unreferenced cached blocks, oldest first
  std::vector<std::list<int32_t>::iterator> lru_pos_;
  std::vector<bool> in_lru_;
};

}  // namespace chorus
