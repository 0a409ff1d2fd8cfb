#include "chorus/kv_cache/block_manager.h"

#include <gtest/gtest.h>

namespace chorus {
namespace {

TEST(BlockManagerTest, RefcountsAndFreeList) {
  BlockManager m(4, 16, false);
  const int32_t a = m.Allocate();
  EXPECT_EQ(m.num_used(), 1);
  m.Ref(a);
  m.Unref(a);
  EXPECT_EQ(m.num_used(), 1);
  m.Unref(a);
  EXPECT_EQ(m.num_used(), 0);
  for (int i = 0; i < 4; ++i) EXPECT_GE(m.Allocate(), 0);
  EXPECT_EQ(m.Allocate(), -1);
}

TEST(BlockManagerTest, PrefixCacheKeepsIdleBlocksUntilEvicted) {
  BlockManager m(2, 4, true);
  const int32_t tokens[4] = {1, 2, 3, 4};
  const uint64_t h = BlockManager::ChainHash(0, tokens, 4);
  EXPECT_NE(h, BlockManager::ChainHash(7, tokens, 4));  // chained to its prefix
  const int32_t b = m.Allocate();
  m.Publish(b, h, tokens, -1, 0);
  m.Unref(b);
  EXPECT_EQ(m.num_cached_idle(), 1);
  EXPECT_EQ(m.num_used(), 0);
  EXPECT_EQ(m.Lookup(h, tokens, -1, 0), b);  // revived with one reference
  EXPECT_EQ(m.refcount(b), 1);
  m.Unref(b);
  // Exhausting the free list evicts the cached block; its hash is forgotten.
  EXPECT_GE(m.Allocate(), 0);
  EXPECT_EQ(m.Allocate(), b);
  EXPECT_EQ(m.Lookup(h, tokens, -1, 0), -1);
}

// Issue 11, finding 3: the cache trusted the 64-bit chain hash alone, and the hash is
// invertible, so a crafted prompt could be served another user's KV. A forced collision (two
// different blocks under one hash) must be a miss.
TEST(BlockManagerTest, AHashCollisionIsAMissNeverAnotherBlocksKv) {
  BlockManager m(8, 4, true);
  const int32_t victim[4] = {10, 11, 12, 13}, attacker[4] = {10, 11, 12, 99};
  const uint64_t h = BlockManager::ChainHash(0, victim, 4);
  const int32_t b = m.Allocate();
  m.Publish(b, h, victim, -1, 0);
  EXPECT_EQ(m.Lookup(h, attacker, -1, 0), -1);  // same hash, other tokens
  EXPECT_EQ(m.refcount(b), 1);                  // and no reference was taken
  EXPECT_EQ(m.Lookup(h, victim, -1, 0), b);
  m.Unref(b);
}

// The second block of a chain is shared only after the very block it was computed after:
// same tokens after another (or a reused) parent block is a miss.
TEST(BlockManagerTest, ACachedBlockIsSharedOnlyAfterItsOwnParent) {
  BlockManager m(8, 4, true);
  const int32_t first[4] = {1, 2, 3, 4}, second[4] = {5, 6, 7, 8};
  const uint64_t h0 = BlockManager::ChainHash(0, first, 4);
  const uint64_t h1 = BlockManager::ChainHash(h0, second, 4);
  const int32_t p = m.Allocate(), c = m.Allocate(), other = m.Allocate();
  m.Publish(p, h0, first, -1, 0);
  m.Publish(c, h1, second, p, 0);
  EXPECT_EQ(m.Lookup(h1, second, other, 0), -1);  // forged chain: another parent
  EXPECT_EQ(m.Lookup(h1, second, p, 0), c);
  m.Unref(c);  // c stays referenced (cached); p goes idle and is reused for other tokens
  m.Unref(p);
  while (m.Allocate() != p) {
  }
  EXPECT_EQ(m.Lookup(h1, second, p, 0), -1);  // c followed p's old contents
}

// Issue 11, finding 3: requests with different cache salts never share blocks (cache hits
// show in usage.cached_prompt_tokens and in TTFT).
TEST(BlockManagerTest, CacheSaltsIsolateEntries) {
  BlockManager m(8, 4, true);
  const int32_t tokens[4] = {1, 2, 3, 4};
  const uint64_t alice = BlockManager::SaltKey("alice"), bob = BlockManager::SaltKey("bob");
  EXPECT_EQ(BlockManager::SaltKey(""), 0u);
  EXPECT_NE(alice, bob);
  EXPECT_NE(BlockManager::ChainHash(alice, tokens, 4), BlockManager::ChainHash(bob, tokens, 4));
  const uint64_t h = BlockManager::ChainHash(alice, tokens, 4);
  const int32_t b = m.Allocate();
  m.Publish(b, h, tokens, -1, alice);
  EXPECT_EQ(m.Lookup(h, tokens, -1, bob), -1);  // even under a forced equal hash
  EXPECT_EQ(m.Lookup(h, tokens, -1, 0), -1);
  EXPECT_EQ(m.Lookup(h, tokens, -1, alice), b);
}

}  // namespace
}  // namespace chorus
