// chorusd as SREs run it: a spawned process on 127.0.0.1 (ephemeral port). SIGTERM drains:
// health NOT_SERVING, new calls UNAVAILABLE, the in-flight stream finishes OK, exit code 0.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <thread>

#include "../test_util.h"
#include "chorus/v1/chorus.grpc.pb.h"
#include "daemon.h"
#include "grpc/health/v1/health.grpc.pb.h"

namespace chorus {
namespace {

namespace pb = chorus::v1;
namespace health = grpc::health::v1;
using testing::Daemon;
using testing::Spawn;

health::HealthCheckResponse::ServingStatus Health(const std::shared_ptr<grpc::Channel>& ch) {
  auto stub = health::Health::NewStub(ch);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
  health::HealthCheckResponse r;
  if (!stub->Check(&ctx, {}, &r).ok()) return health::HealthCheckResponse::UNKNOWN;
  return r.status();
}

TEST(DrainTest, SigtermDrainsInFlightRequestsAndExitsZero) {
  Daemon d = Spawn({});
  ASSERT_GT(d.port, 0);
  auto ch = grpc::CreateChannel("127.0.0.1:" + std::to_string(d.port),
                                grpc::InsecureChannelCredentials());
  EXPECT_EQ(Health(ch), health::HealthCheckResponse::SERVING);
  auto stub = pb::Chorus::NewStub(ch);

  // A stream long enough to be in flight when SIGTERM arrives.
  pb::GenerateRequest r;
  r.set_prompt("Once upon a time");
  r.set_max_tokens(1500);
  r.mutable_reasoning()->set_agents(2);
  grpc::ClientContext ctx;
  auto reader = stub->GenerateStream(&ctx, r);
  pb::GenerateEvent e;
  ASSERT_TRUE(reader->Read(&e));  // started
  ASSERT_EQ(::kill(d.pid, SIGTERM), 0);
  // NOT_SERVING soon, and new calls refused with UNAVAILABLE.
  bool not_serving = false;
  for (int i = 0; i < 100 && !not_serving; ++i) {
    not_serving = Health(ch) == health::HealthCheckResponse::NOT_SERVING;
    if (!not_serving) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  EXPECT_TRUE(not_serving);
  {
    grpc::ClientContext c2;
    pb::GenerateResponse resp;
    pb::GenerateRequest small;
    small.set_prompt("hi");
    small.set_max_tokens(2);
    const grpc::Status s = stub->Generate(&c2, small, &resp);
    EXPECT_EQ(s.error_code(), grpc::UNAVAILABLE) << s.error_message();
  }
  bool got_result = false;
  while (reader->Read(&e)) got_result |= e.has_result();
  EXPECT_TRUE(reader->Finish().ok());
  EXPECT_TRUE(got_result);
  int status = 0;
  ASSERT_EQ(::waitpid(d.pid, &status, 0), d.pid);
  EXPECT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
  std::fclose(d.out);
}

TEST(DrainTest, ABadModelFileExitsNonZeroWithAClearError) {
  const std::string junk = testing::TempPath("bad.gguf");
  {
    FILE* f = std::fopen(junk.c_str(), "wb");
    std::fputs("GGUF\x03\0\0\0 truncated", f);
    std::fclose(f);
  }
  const std::string cmd =
      testing::BinaryPath("src/chorusd") + " --listen 127.0.0.1:0 --model " + junk + " 2>&1";
  FILE* p = ::popen(cmd.c_str(), "r");
  char buf[512] = {0};
  const size_t n = std::fread(buf, 1, sizeof(buf) - 1, p);
  const int status = ::pclose(p);
  EXPECT_NE(WEXITSTATUS(status), 0);
  EXPECT_NE(std::string(buf, n).find(junk), std::string::npos) << buf;
  std::remove(junk.c_str());
}

// A GPU that is not there (or a build without CUDA) is a clear start-up error, not a crash.
TEST(DrainTest, AMissingCudaDeviceExitsNonZeroNamingIt) {
  const std::string cfg = testing::TempPath("cuda.pbtxt");
  {
    FILE* f = std::fopen(cfg.c_str(), "w");
    std::fprintf(f,
                 "listen_address: \"127.0.0.1:0\"\nmodel_path: \"%s\"\nbackend: "
                 "\"cuda\"\ncuda_devices: 63\n",
                 testing::SourcePath("models/stories260K.gguf").c_str());
    std::fclose(f);
  }
  const std::string cmd = testing::BinaryPath("src/chorusd") + " --config " + cfg + " 2>&1";
  FILE* p = ::popen(cmd.c_str(), "r");
  char buf[1024] = {0};
  const size_t n = std::fread(buf, 1, sizeof(buf) - 1, p);
  const int status = ::pclose(p);
  EXPECT_NE(WEXITSTATUS(status), 0);
  const std::string out(buf, n);
  EXPECT_TRUE(out.find("device 63 not available") != std::string::npos ||
              out.find("no CUDA backend") != std::string::npos)
      << out;
  std::remove(cfg.c_str());
}

}  // namespace
}  // namespace chorus
