// Robustness over gRPC: a random-weight model emits arbitrary byte tokens, yet every streamed
// delta is valid UTF-8 and the deltas still add up to the drafts; a deadline storm ends every
// call OK or DEADLINE_EXCEEDED with the KV cache back at idle.
#include <random>
#include <thread>

#include "chorus/core/utf8.h"
#include "chorus/gguf/gguf_writer.h"
#include "chorus/gguf/random_model.h"
#include "server_fixture.h"

namespace chorus {
namespace {

namespace pb = chorus::v1;

bool ValidUtf8(const std::string& s) {
  for (size_t i = 0; i < s.size();) {
    int len;
    const uint32_t cp = DecodeUtf8(s, i, &len);
    if (cp == 0xfffd && !(len == 3 && s.compare(i, 3, "\xef\xbf\xbd") == 0)) return false;
    i += len;
  }
  return true;
}

class RandomModelServerTest : public testing::ServerTest {
 protected:
  void Configure(pb::ServerConfig& c) override {
    // Vocabulary of stories260K (256 byte-fallback tokens), random weights: random bytes out.
    path_ = testing::TempPath("random_bytes.gguf");
    auto vocab = GgufFile::Open(testing::SourcePath("models/stories260K.gguf"));
    ASSERT_TRUE(vocab.ok());
    RandomModelSpec spec;
    spec.seed = 99;
    GgufWriter w;
    ASSERT_TRUE(BuildRandomModel(spec, vocab->get(), &w).ok());
    ASSERT_TRUE(w.WriteFile(path_).ok());
    c.set_model_path(path_);
  }
  void TearDown() override {
    ServerTest::TearDown();
    std::remove(path_.c_str());
  }
  std::string path_;
};

TEST_F(RandomModelServerTest, StreamedDeltasAreAlwaysWholeUtf8) {
  pb::GenerateRequest r;
  r.set_prompt("Once");
  r.set_max_tokens(200);
  r.mutable_sampling()->set_temperature(1.5f);
  r.mutable_sampling()->set_seed(1);
  r.mutable_reasoning()->set_agents(4);
  r.mutable_reasoning()->set_return_drafts(true);
  grpc::ClientContext ctx;
  auto reader = stub_->GenerateStream(&ctx, r);
  pb::GenerateEvent e;
  std::map<int, std::string> streamed;
  pb::GenerateResponse result;
  int deltas = 0;
  while (reader->Read(&e)) {
    if (e.has_delta()) {
      EXPECT_TRUE(ValidUtf8(e.delta().text())) << "agent " << e.delta().agent();
      streamed[e.delta().agent()] += e.delta().text();
      ++deltas;
    } else if (e.has_result()) {
      result = e.result();
    }
  }
  ASSERT_TRUE(reader->Finish().ok());
  EXPECT_GT(deltas, 20);
  ASSERT_EQ(result.drafts_size(), 4);
  bool saw_multibyte = false;
  for (const auto& d : result.drafts()) {
    EXPECT_EQ(streamed[d.agent()], d.text());
    EXPECT_TRUE(ValidUtf8(d.text()));
    for (unsigned char c : d.text()) saw_multibyte |= c >= 0x80;
  }
  EXPECT_TRUE(saw_multibyte) << "the random model produced no byte tokens; the test proves little";
}

TEST_F(RandomModelServerTest, DeadlineStormEndsEveryCallAndFreesTheCache) {
  constexpr int kCalls = 96;
  std::vector<grpc::StatusCode> codes(kCalls);
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 rng(t);
      for (int i = t; i < kCalls; i += 8) {
        pb::GenerateRequest r;
        r.set_prompt("Once upon a time");
        r.set_max_tokens(1000);
        r.mutable_reasoning()->set_agents(1 + static_cast<int>(rng() % 4));
        grpc::ClientContext ctx;
        ctx.set_deadline(std::chrono::system_clock::now() +
                         std::chrono::milliseconds(1 + rng() % 300));
        pb::GenerateResponse resp;
        codes[i] = stub_->Generate(&ctx, r, &resp).error_code();
      }
    });
  }
  for (auto& t : threads) t.join();
  int ok = 0, expired = 0;
  for (auto c : codes) {
    EXPECT_TRUE(c == grpc::OK || c == grpc::DEADLINE_EXCEEDED) << c;
    ok += c == grpc::OK;
    expired += c == grpc::DEADLINE_EXCEEDED;
  }
  EXPECT_EQ(ok + expired, kCalls);
  EXPECT_GT(ok, 0);  // budget-cut drafts come back before the deadline
  const auto idle = IdleStats();
  EXPECT_EQ(idle.kv_blocks_used(), 0);
  EXPECT_EQ(idle.running_requests() + idle.waiting_requests(), 0);
}

}  // namespace
}  // namespace chorus
