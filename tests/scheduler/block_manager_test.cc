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
  m.Publish(b, h);
  m.Unref(b);
  EXPECT_EQ(m.num_cached_idle(), 1);
  EXPECT_EQ(m.num_used(), 0);
  EXPECT_EQ(m.Lookup(h), b);  // revived with one reference
  EXPECT_EQ(m.refcount(b), 1);
  m.Unref(b);
  // Exhausting the free list evicts the cached block; its hash is forgotten.
  EXPECT_GE(m.Allocate(), 0);
  EXPECT_EQ(m.Allocate(), b);
  EXPECT_EQ(m.Lookup(h), -1);
}

}  // namespace
}  // namespace chorus
