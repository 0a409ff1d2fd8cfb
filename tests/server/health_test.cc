// Honest health: an injected engine stall turns health NOT_SERVING while requests wait, and
// SERVING again once the loop moves; the request still completes.
#include <atomic>
#include <thread>

#include "grpc/health/v1/health.grpc.pb.h"
#include "server_fixture.h"

namespace chorus {
namespace {

namespace health = grpc::health::v1;

std::atomic<bool> g_stall{false};

class HealthServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    chorus::v1::ServerConfig c = DefaultServerConfig();
    c.set_listen_address("127.0.0.1:0");
    c.set_model_path(testing::SourcePath("models/stories260K.gguf"));
    c.set_num_threads(1);
    c.set_kv_num_blocks(256);
    c.set_engine_stall_timeout_ms(200);
    c.set_metrics_listen_address("");
    auto s = ChorusServer::Start(c, [] {
      while (g_stall) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    });
    ASSERT_TRUE(s.ok()) << s.status();
    server_ = std::move(*s);
    channel_ = grpc::CreateChannel("127.0.0.1:" + std::to_string(server_->port()),
                                   grpc::InsecureChannelCredentials());
  }
  health::HealthCheckResponse::ServingStatus Health() {
    auto stub = health::Health::NewStub(channel_);
    grpc::ClientContext ctx;
    health::HealthCheckResponse r;
    if (!stub->Check(&ctx, {}, &r).ok()) return health::HealthCheckResponse::UNKNOWN;
    return r.status();
  }
  bool WaitFor(health::HealthCheckResponse::ServingStatus want) {
    for (int i = 0; i < 400; ++i) {
      if (Health() == want) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return false;
  }
  std::unique_ptr<ChorusServer> server_;
  std::shared_ptr<grpc::Channel> channel_;
};

TEST_F(HealthServerTest, AStalledEngineIsReportedAndRecovers) {
  EXPECT_EQ(Health(), health::HealthCheckResponse::SERVING);
  g_stall = true;
  grpc::Status status;
  std::thread client([&] {
    auto stub = chorus::v1::Chorus::NewStub(channel_);
    chorus::v1::GenerateRequest r;
    r.set_prompt("Once upon a time");
    r.set_max_tokens(8);
    chorus::v1::GenerateResponse resp;
    grpc::ClientContext ctx;
    status = stub->Generate(&ctx, r, &resp);
  });
  EXPECT_TRUE(WaitFor(health::HealthCheckResponse::NOT_SERVING));
  g_stall = false;
  EXPECT_TRUE(WaitFor(health::HealthCheckResponse::SERVING));
  client.join();
  EXPECT_TRUE(status.ok()) << status.error_message();
}

}  // namespace
}  // namespace chorus
