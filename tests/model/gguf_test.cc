#include "chorus/gguf/gguf.h"

#include <gtest/gtest.h>

#include "../test_util.h"
#include "chorus/gguf/gguf_writer.h"

namespace chorus {
namespace {

TEST(GgufTest, ReadsTheRealStoriesModel) {
  auto f = GgufFile::Open(testing::SourcePath("models/stories260K.gguf"));
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ((*f)->version(), 3u);
  EXPECT_EQ((*f)->tensors().size(), 48u);  // PROVENANCE.md
  auto arch = (*f)->GetString("general.architecture");
  ASSERT_TRUE(arch.ok());
  EXPECT_EQ(*arch, "llama");
  const GgufTensorInfo* k = (*f)->FindTensor("blk.0.attn_k.weight");
  ASSERT_NE(k, nullptr);
  EXPECT_EQ(k->ne[0], 64);
  EXPECT_EQ(k->ne[1], 32);
  EXPECT_EQ(k->num_bytes, 64 * 32 * 4);
  auto ctx = (*f)->GetUint("llama.context_length", UINT32_MAX);
  ASSERT_TRUE(ctx.ok());
  EXPECT_EQ(*ctx, 2048u);
}

TEST(GgufTest, WriterRoundTripsEveryValueType) {
  GgufWriter w(64);
  w.SetU8("u8", 200);
  w.SetI8("i8", -100);
  w.SetU16("u16", 60000);
  w.SetI16("i16", -30000);
  w.SetU32("u32", 4000000000u);
  w.SetI32("i32", -2000000000);
  w.SetU64("u64", 1ull << 60);
  w.SetI64("i64", -(1ll << 60));
  w.SetF32("f32", 1.5f);
  w.SetF64("f64", -2.25);
  w.SetBool("bool", true);
  w.SetString("str", "h\xc3\xa9llo");
  w.SetStringArray("strs", {"a", "", "ccc"});
  w.SetF32Array("f32s", {1.0f, -2.0f});
  w.SetI32Array("i32s", {7, -8, 9});
  std::string data(3 * 4 * 4, '\0');
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>(i);
  w.AddTensor("t0", GgmlType::kF32, {4, 3}, data);
  w.AddTensor("t1", GgmlType::kF32, {4}, data.substr(0, 16));
  auto f = GgufFile::FromBytes(w.Serialize());
  ASSERT_TRUE(f.ok()) << f.status();
  const GgufFile& g = **f;
  EXPECT_EQ(g.alignment(), 64u);
  EXPECT_EQ(g.Find("u8")->u64, 200u);
  EXPECT_EQ(g.Find("i8")->i64, -100);
  EXPECT_EQ(g.Find("u16")->u64, 60000u);
  EXPECT_EQ(g.Find("i16")->i64, -30000);
  EXPECT_EQ(g.Find("u32")->u64, 4000000000u);
  EXPECT_EQ(g.Find("i32")->i64, -2000000000);
  EXPECT_EQ(g.Find("u64")->u64, 1ull << 60);
  EXPECT_EQ(g.Find("i64")->i64, -(1ll << 60));
  EXPECT_EQ(g.Find("f32")->f64, 1.5);
  EXPECT_EQ(g.Find("f64")->f64, -2.25);
  EXPECT_EQ(*g.GetBool("bool"), true);
  EXPECT_EQ(*g.GetString("str"), "h\xc3\xa9llo");
  EXPECT_EQ(g.Find("strs")->strings, (std::vector<std::string_view>{"a", "", "ccc"}));
  EXPECT_EQ(g.Find("f32s")->ArrayFloat(1), -2.0);
  EXPECT_EQ(g.Find("i32s")->ArrayInt(1), -8);
  ASSERT_EQ(g.tensors().size(), 2u);
  EXPECT_EQ((g.data_offset() % 64), 0u);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(g.tensors()[0].data), data.size()), data);
  EXPECT_EQ(g.tensors()[1].offset % 64, 0u);
  // Copying values through the writer preserves them.
  GgufWriter w2;
  for (const auto& kv : g.metadata()) {
    if (kv.key != "general.alignment") w2.CopyValue(kv.key, kv.value);
  }
  auto f2 = GgufFile::FromBytes(w2.Serialize());
  ASSERT_TRUE(f2.ok()) << f2.status();
  EXPECT_EQ((*f2)->Find("strs")->strings, g.Find("strs")->strings);
  EXPECT_EQ((*f2)->Find("i64")->i64, -(1ll << 60));
  EXPECT_EQ((*f2)->Find("f32")->f64, 1.5);
}

TEST(GgufTest, TypedGettersNameTheKeyOnMismatch) {
  GgufWriter w;
  w.SetString("llama.block_count", "five");
  w.SetI32("neg", -1);
  auto f = GgufFile::FromBytes(w.Serialize());
  ASSERT_TRUE(f.ok());
  auto a = (*f)->GetUint("llama.block_count", 100);
  EXPECT_EQ(a.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(a.status().message().find("llama.block_count"), std::string::npos);
  EXPECT_FALSE((*f)->GetUint("neg", 100).ok());
  EXPECT_EQ((*f)->GetUint("absent", 1).status().code(), absl::StatusCode::kNotFound);
}

TEST(GgufTest, OpenOfMissingFileFails) {
  auto f = GgufFile::Open("/nonexistent/model.gguf");
  EXPECT_FALSE(f.ok());
  EXPECT_NE(f.status().message().find("/nonexistent/model.gguf"), std::string::npos);
}

}  // namespace
}  // namespace chorus

namespace chorus {
namespace {

TEST(GgufTest, VersionTwoFilesAreRead) {
  GgufWriter w;
  w.SetString("general.architecture", "llama");
  w.AddTensor("t", GgmlType::kF32, {8}, std::string(32, '\0'));
  std::string bytes = w.Serialize();
  bytes[4] = 2;  // v2 has the same layout as v3 (64-bit counts)
  auto f = GgufFile::FromBytes(bytes);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ((*f)->version(), 2u);
  EXPECT_EQ((*f)->tensors().size(), 1u);
}

}  // namespace
}  // namespace chorus
