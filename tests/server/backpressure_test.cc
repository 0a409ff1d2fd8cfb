// Issue 11, finding 1: one client must not hold the server's memory. A GenerateStream client
// that stops reading gets its request cancelled (slot and KV freed) and RESOURCE_EXHAUSTED;
// gRPC's per-connection stream limit keeps one connection from opening unbounded calls.
#include <atomic>
#include <thread>

#include "server_fixture.h"

namespace chorus {
namespace {

using testing::ServerTest;
namespace pb = chorus::v1;

// A channel with its own connection whose client reads ahead at most 1 KiB per stream, so a
// stream the test does not read backs up on the server quickly.
std::shared_ptr<grpc::Channel> OwnConnection(int port, int lookahead_bytes = 0) {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  if (lookahead_bytes > 0) {
    args.SetInt(GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES, lookahead_bytes);
    args.SetInt(GRPC_ARG_HTTP2_BDP_PROBE, 0);
  }
  return grpc::CreateCustomChannel("127.0.0.1:" + std::to_string(port),
                                   grpc::InsecureChannelCredentials(), args);
}

class StreamBacklogServerTest : public ServerTest {
 protected:
  void Configure(pb::ServerConfig& c) override {
    c.set_kv_num_blocks(4096);
    c.set_stream_backlog_max_bytes(4096);
  }
};

TEST_F(StreamBacklogServerTest, AClientThatStopsReadingIsCancelledWithResourceExhausted) {
  auto stub = pb::Chorus::NewStub(OwnConnection(server_->port(), 1024));
  pb::GenerateRequest r;
  r.set_prompt("Once");
  r.set_max_tokens(1000);
  r.mutable_sampling()->set_temperature(0);
  r.mutable_reasoning()->set_agents(16);  // ~16,000 delta events
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(120));
  auto reader = stub->GenerateStream(&ctx, r);
  // The test reads nothing until the runtime has ended the request.
  pb::GetStatsResponse s;
  for (int i = 0; i < 3000; ++i) {
    s = Stats();
    if (s.requests_cancelled() + s.requests_completed() > 0 && s.running_requests() == 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(s.requests_cancelled(), 1);
  EXPECT_EQ(s.requests_completed(), 0);
  EXPECT_EQ(IdleStats().kv_blocks_used(), 0);  // freed while the client still is not reading
  pb::GenerateEvent e;
  bool got_result = false;
  while (reader->Read(&e)) got_result |= e.has_result();
  const grpc::Status st = reader->Finish();
  EXPECT_FALSE(got_result);
  EXPECT_EQ(st.error_code(), grpc::RESOURCE_EXHAUSTED) << st.error_message();
  EXPECT_NE(st.error_message().find("stream_backlog_max_bytes"), std::string::npos)
      << st.error_message();
}

// A reading client is not cut, however many bytes its request streams: the bound is on deltas
// not yet written out, not on the stream. The 16 drafts' agent-finished events (full drafts)
// often come in one step, a burst larger than this bound: counted against it, they cut a reading
// client in 18 of 20 runs on a loaded 2-core machine (and the old 4 KiB, 4-agent version of
// this test failed in CI-like runs); now they are not counted, like the final result.
class StreamBacklogReadingTest : public ServerTest {
 protected:
  void Configure(pb::ServerConfig& c) override {
    c.set_kv_num_blocks(4096);
    c.set_stream_backlog_max_bytes(kBacklog);
  }
  static constexpr int64_t kBacklog = 24 << 10;
};

TEST_F(StreamBacklogReadingTest, AReadingClientGetsEveryEvent) {
  pb::GenerateRequest r;
  r.set_prompt("Once");
  r.set_max_tokens(400);
  r.mutable_sampling()->set_temperature(0);
  r.mutable_reasoning()->set_agents(16);
  grpc::ClientContext ctx;
  auto reader = stub_->GenerateStream(&ctx, r);
  pb::GenerateEvent e;
  int deltas = 0;
  int64_t bytes = 0;
  bool got_result = false;
  while (reader->Read(&e)) {
    deltas += e.has_delta();
    bytes += static_cast<int64_t>(e.ByteSizeLong());
    got_result |= e.has_result();
  }
  const grpc::Status st = reader->Finish();
  EXPECT_TRUE(st.ok()) << st.error_message();
  EXPECT_TRUE(got_result);
  EXPECT_GT(deltas, 16);
  EXPECT_GT(bytes, kBacklog) << "the stream must outgrow the bound for the test to mean anything";
}

std::atomic<bool> g_hold_engine{false};

class ConnectionLimitServerTest : public ServerTest {
 protected:
  void Configure(pb::ServerConfig& c) override { c.set_grpc_max_concurrent_streams(1); }
  std::function<void()> BeforeStep() override {
    return [] {
      while (g_hold_engine) std::this_thread::sleep_for(std::chrono::milliseconds(2));
    };
  }
};

TEST_F(ConnectionLimitServerTest, ACallBeyondTheStreamLimitWaitsInItsClient) {
  auto conn = OwnConnection(server_->port());
  auto stub = pb::Chorus::NewStub(conn);
  auto call = [&](const std::string& id, grpc::Status* status) {
    pb::GenerateRequest r;
    r.set_request_id(id);
    r.set_prompt("Once");
    r.set_max_tokens(4);
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    pb::GenerateResponse resp;
    *status = stub->Generate(&ctx, r, &resp);
  };
  g_hold_engine = true;  // the first call stays in flight until released
  grpc::Status first, second;
  std::thread a([&] { call("first", &first); });
  for (int i = 0; i < 2000 && Stats().running_requests() == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  std::thread b([&] { call("second", &second); });
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  // Another connection sees that the second call never reached the server.
  auto other = pb::Chorus::NewStub(OwnConnection(server_->port()));
  grpc::ClientContext actx;
  pb::AbortRequest ar;
  ar.set_request_id("second");
  pb::AbortResponse aresp;
  ASSERT_TRUE(other->Abort(&actx, ar, &aresp).ok());
  EXPECT_FALSE(aresp.found());
  g_hold_engine = false;
  a.join();
  b.join();
  EXPECT_TRUE(first.ok()) << first.error_message();
  EXPECT_TRUE(second.ok()) << second.error_message();
}

}  // namespace
}  // namespace chorus
