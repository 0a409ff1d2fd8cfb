// Handcrafted corrupt GGUF files: each must be rejected with a Status that names the problem,
// never a crash (the suite runs under ASan/UBSan with CHORUS_SANITIZER).
#include <gtest/gtest.h>

#include <cstring>

#include "chorus/gguf/gguf.h"
#include "chorus/gguf/gguf_writer.h"
#include "chorus/model/hparams.h"

namespace chorus {
namespace {

// Little-endian byte builder for files the writer would never produce.
struct Bytes {
  std::string s;
  Bytes& U32(uint32_t v) {
    s.append(reinterpret_cast<char*>(&v), 4);
    return *this;
  }
  Bytes& U64(uint64_t v) {
    s.append(reinterpret_cast<char*>(&v), 8);
    return *this;
  }
  Bytes& Str(std::string_view v) {
    U64(v.size());
    s.append(v);
    return *this;
  }
  Bytes& Header(uint64_t n_tensors, uint64_t n_kv, uint32_t version = 3) {
    U32(0x46554747);
    U32(version);
    U64(n_tensors);
    U64(n_kv);
    return *this;
  }
  Bytes& Tensor(std::string_view name, std::vector<uint64_t> ne, uint32_t type, uint64_t off) {
    Str(name);
    U32(static_cast<uint32_t>(ne.size()));
    for (auto n : ne) U64(n);
    U32(type);
    U64(off);
    return *this;
  }
  Bytes& Pad(size_t align = 32) {
    s.resize((s.size() + align - 1) / align * align);
    return *this;
  }
  Bytes& Zeros(size_t n) {
    s.append(n, '\0');
    return *this;
  }
};

struct Case {
  const char* name;
  std::string bytes;
  const char* expect;  // substring of the error message
};

std::vector<Case> Cases() {
  std::vector<Case> c;
  c.push_back({"empty file", "", "truncated header magic"});
  c.push_back({"bad magic", Bytes().U32(0x12345678).U32(3).U64(0).U64(0).s, "bad magic"});
  c.push_back({"version 1", Bytes().Header(0, 0, 1).s, "unsupported version 1"});
  c.push_back({"version 4", Bytes().Header(0, 0, 4).s, "unsupported version 4"});
  c.push_back(
      {"truncated header", Bytes().Header(0, 0).s.substr(0, 20), "truncated metadata count"});
  c.push_back({"huge kv count", Bytes().Header(0, UINT64_MAX).s, "metadata count"});
  c.push_back({"huge tensor count", Bytes().Header(UINT64_MAX / 2, 0).s, "tensor count"});
  c.push_back({"key length past end", Bytes().Header(0, 1).U64(1ull << 40).Zeros(32).s,
               "metadata key length"});
  c.push_back({"empty key", Bytes().Header(0, 1).Str("").U32(4).U32(1).s, "empty metadata key"});
  c.push_back({"duplicate key",
               Bytes().Header(0, 2).Str("a").U32(4).U32(1).Str("a").U32(4).U32(2).s,
               "duplicate metadata key 'a'"});
  c.push_back({"unknown value type", Bytes().Header(0, 1).Str("k").U32(13).U32(0).s,
               "unknown value type 13"});
  c.push_back({"bool not 0/1", Bytes().Header(0, 1).Str("b").U32(7).s + "\x05", "bool value 5"});
  c.push_back(
      {"string length past end", Bytes().Header(0, 1).Str("k").U32(8).U64(1000).s, "string value"});
  c.push_back({"array count past end",
               Bytes().Header(0, 1).Str("k").U32(9).U32(6).U64(1ull << 62).s, "exceeds the file"});
  c.push_back({"array count overflows size",
               Bytes().Header(0, 1).Str("k").U32(9).U32(10).U64(UINT64_MAX / 4).s,
               "exceeds the file"});
  c.push_back(
      {"nested array", Bytes().Header(0, 1).Str("k").U32(9).U32(9).U64(1).s, "nested arrays"});
  c.push_back({"unknown array element type", Bytes().Header(0, 1).Str("k").U32(9).U32(99).U64(1).s,
               "unknown array element type"});
  c.push_back({"string array count past end",
               Bytes().Header(0, 1).Str("tokenizer.ggml.tokens").U32(9).U32(8).U64(1ull << 50).s,
               "string array count"});
  c.push_back({"alignment wrong type",
               Bytes().Header(0, 1).Str("general.alignment").U32(8).Str("32").s,
               "general.alignment has type string"});
  c.push_back({"alignment not power of two",
               Bytes().Header(0, 1).Str("general.alignment").U32(4).U32(48).s,
               "not a power of two"});
  c.push_back({"alignment zero", Bytes().Header(0, 1).Str("general.alignment").U32(4).U32(0).s,
               "not a power of two"});
  c.push_back(
      {"too many dims", Bytes().Header(1, 0).Tensor("t", {1, 1, 1, 1, 1}, 0, 0).s, "has 5 dims"});
  c.push_back({"zero dim", Bytes().Header(1, 0).Tensor("t", {4, 0}, 0, 0).s, "dimension 1 is 0"});
  c.push_back({"dims product overflows",
               Bytes().Header(1, 0).Tensor("t", {1ull << 32, 1ull << 32}, 0, 0).s, "overflows"});
  c.push_back({"byte size overflows",
               Bytes().Header(1, 0).Tensor("t", {1ull << 31, 1ull << 31}, 0, 0).s, "overflows"});
  c.push_back({"unknown tensor type", Bytes().Header(1, 0).Tensor("t", {4}, 77, 0).s,
               "unknown type id 77"});
  c.push_back({"row not multiple of block", Bytes().Header(1, 0).Tensor("t", {33}, 8, 0).s,
               "not a multiple of the Q8_0 block size"});
  c.push_back({"unaligned offset", Bytes().Header(1, 0).Tensor("t", {4}, 0, 3).s,
               "not a multiple of the alignment"});
  c.push_back({"tensor data past end",
               Bytes().Header(1, 0).Tensor("t", {1024}, 0, 0).Pad().Zeros(16).s,
               "past the end of the file"});
  c.push_back({"offset near u64 max",
               Bytes().Header(1, 0).Tensor("t", {4}, 0, UINT64_MAX - 31).Pad().Zeros(16).s,
               "past the end of the file"});
  c.push_back(
      {"duplicate tensor names",
       Bytes().Header(2, 0).Tensor("w", {4}, 0, 0).Tensor("w", {4}, 0, 32).Pad().Zeros(64).s,
       "duplicate tensor name 'w'"});
  c.push_back(
      {"overlapping tensors",
       Bytes().Header(2, 0).Tensor("a", {16}, 0, 0).Tensor("b", {16}, 0, 32).Pad().Zeros(128).s,
       "overlaps"});
  c.push_back({"tensor name too long",
               Bytes().Header(1, 0).Tensor(std::string(300, 'x'), {4}, 0, 0).s,
               "tensor name length 300"});
  return c;
}

TEST(GgufCorruptTest, EveryHandcraftedFileIsRejectedWithAClearError) {
  const auto cases = Cases();
  ASSERT_GE(cases.size(), 15u);
  for (const Case& c : cases) {
    auto f = GgufFile::FromBytes(c.bytes);
    ASSERT_FALSE(f.ok()) << c.name << " was accepted";
    EXPECT_NE(f.status().message().find(c.expect), std::string::npos)
        << c.name << ": got '" << f.status().message() << "', expected '" << c.expect << "'";
  }
}

TEST(GgufCorruptTest, EveryTruncationOfAValidFileIsRejected) {
  GgufWriter w;
  w.SetString("general.architecture", "llama");
  w.SetStringArray("tokenizer.ggml.tokens", {"a", "b", "c"});
  w.AddTensor("t", GgmlType::kF32, {8}, std::string(32, '\1'));
  const std::string full = w.Serialize();
  auto whole = GgufFile::FromBytes(full);
  ASSERT_TRUE(whole.ok()) << whole.status();
  const size_t data_end = (*whole)->data_offset() + 32;  // end of the only tensor's data
  for (size_t n = 0; n < data_end; ++n) {
    EXPECT_FALSE(GgufFile::FromBytes(full.substr(0, n)).ok()) << "accepted a file cut at " << n;
  }
}

TEST(GgufCorruptTest, WrongMetadataTypesForKnownKeysAreNamed) {
  GgufWriter w;
  w.SetString("general.architecture", "llama");
  w.SetF32("llama.embedding_length", 64.0f);
  auto f = GgufFile::FromBytes(w.Serialize());
  ASSERT_TRUE(f.ok());
  auto cfg = ReadModelConfig(**f);
  ASSERT_FALSE(cfg.ok());
  EXPECT_NE(cfg.status().message().find("llama.embedding_length"), std::string::npos);
  EXPECT_NE(cfg.status().message().find("f32"), std::string::npos);
}

}  // namespace
}  // namespace chorus
