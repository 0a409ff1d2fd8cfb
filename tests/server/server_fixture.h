// In-process chorusd on 127.0.0.1 with an ephemeral port, plus a stub connected to it.
#pragma once

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <httplib.h>

#include <filesystem>
#include <fstream>
#include <functional>

#include "../test_util.h"
#include "chorus/server/server.h"
#include "chorus/v1/chorus.grpc.pb.h"

namespace chorus::testing {

// GET http://127.0.0.1:PORT/PATH with cpp-httplib's client: the body of a 200 response, or ""
// when nothing listens or the status is not 200.
inline std::string HttpGet(int port, const std::string& path) {
  httplib::Client client("127.0.0.1", port);
  client.set_connection_timeout(5);
  client.set_read_timeout(10);
  const httplib::Result r = client.Get(path);
  return r && r->status == 200 ? r->body : "";
}

class ServerTest : public ::testing::Test {
 protected:
  virtual void Configure(chorus::v1::ServerConfig& c) {}
  // Runs on the engine thread before every step (fault injection); none by default.
  virtual std::function<void()> BeforeStep() { return nullptr; }
  void SetUp() override {
    chorus::v1::ServerConfig c = DefaultServerConfig();
    c.set_listen_address("127.0.0.1:0");
    c.set_model_path(SourcePath("models/stories260K.gguf"));
    c.set_num_threads(2);
    c.set_kv_num_blocks(1024);
    c.set_metrics_listen_address("127.0.0.1:0");
    Configure(c);
    auto s = ChorusServer::Start(c, BeforeStep());
    ASSERT_TRUE(s.ok()) << s.status();
    server_ = std::move(*s);
    channel_ = grpc::CreateChannel("127.0.0.1:" + std::to_string(server_->port()),
                                   grpc::InsecureChannelCredentials());
    stub_ = chorus::v1::Chorus::NewStub(channel_);
  }
  void TearDown() override { server_.reset(); }

  grpc::Status Generate(const chorus::v1::GenerateRequest& req, chorus::v1::GenerateResponse* resp,
                        int timeout_ms = 60000) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(timeout_ms));
    return stub_->Generate(&ctx, req, resp);
  }
  chorus::v1::GetStatsResponse Stats() {
    grpc::ClientContext ctx;
    chorus::v1::GetStatsResponse s;
    EXPECT_TRUE(stub_->GetStats(&ctx, {}, &s).ok());
    return s;
  }
  // Waits until no request is in flight (the engine thread finishes bookkeeping after replying).
  chorus::v1::GetStatsResponse IdleStats() {
    chorus::v1::GetStatsResponse s;
    for (int i = 0; i < 500; ++i) {
      s = Stats();
      if (s.running_requests() == 0 && s.waiting_requests() == 0 && s.kv_blocks_used() == 0) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return s;
  }

  std::unique_ptr<ChorusServer> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<chorus::v1::Chorus::Stub> stub_;
};

}  // namespace chorus::testing
