// TLS and bearer-token auth: a server with both refuses plaintext and token-less calls, serves
// the right ones (the `chorus` CLI included), and leaves health checks open for probes.
#include <sys/wait.h>

#include "grpc/health/v1/health.grpc.pb.h"
#include "server_fixture.h"

namespace chorus {
namespace {

namespace pb = chorus::v1;

class SecureServerTest : public testing::ServerTest {
 protected:
  void Configure(pb::ServerConfig& c) override {
    dir_ = testing::TempPath("tls");
    std::filesystem::create_directories(dir_);
    const std::string cmd =
        "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost "
        "-addext subjectAltName=DNS:localhost -keyout " +
        dir_ + "/key.pem -out " + dir_ + "/cert.pem > /dev/null 2>&1";
    if (std::system(cmd.c_str()) != 0) {
      skip_ = true;
      return;
    }
    std::ofstream(dir_ + "/token") << "s3cret-token\n";
    c.set_tls_cert_path(dir_ + "/cert.pem");
    c.set_tls_key_path(dir_ + "/key.pem");
    c.set_auth_token_path(dir_ + "/token");
  }
  void SetUp() override {
    ServerTest::SetUp();
    if (skip_) GTEST_SKIP() << "openssl not available to make a test certificate";
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = testing::ReadFile(dir_ + "/cert.pem");
    grpc::ChannelArguments args;
    args.SetSslTargetNameOverride("localhost");
    tls_channel_ = grpc::CreateCustomChannel("127.0.0.1:" + std::to_string(server_->port()),
                                             grpc::SslCredentials(ssl), args);
  }
  void TearDown() override {
    ServerTest::TearDown();
    std::filesystem::remove_all(dir_);
  }
  grpc::Status Call(const std::shared_ptr<grpc::Channel>& ch, const std::string& auth) {
    auto stub = pb::Chorus::NewStub(ch);
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    if (!auth.empty()) ctx.AddMetadata("authorization", auth);
    pb::GenerateRequest r;
    r.set_prompt("Once");
    r.set_max_tokens(4);
    pb::GenerateResponse resp;
    return stub->Generate(&ctx, r, &resp);
  }
  std::string dir_;
  bool skip_ = false;
  std::shared_ptr<grpc::Channel> tls_channel_;
};

TEST_F(SecureServerTest, TlsAndTokenAreEnforcedAndHealthStaysOpen) {
  EXPECT_TRUE(Call(tls_channel_, "Bearer s3cret-token").ok());
  EXPECT_EQ(Call(tls_channel_, "").error_code(), grpc::UNAUTHENTICATED);
  EXPECT_EQ(Call(tls_channel_, "Bearer wrong").error_code(), grpc::UNAUTHENTICATED);
  EXPECT_EQ(Call(channel_, "Bearer s3cret-token").error_code(), grpc::UNAVAILABLE);  // plaintext
  {
    auto stub = pb::Chorus::NewStub(tls_channel_);
    grpc::ClientContext ctx;
    pb::GetStatsResponse s;
    EXPECT_EQ(stub->GetStats(&ctx, {}, &s).error_code(), grpc::UNAUTHENTICATED);
  }
  {
    auto health = grpc::health::v1::Health::NewStub(tls_channel_);
    grpc::ClientContext ctx;
    grpc::health::v1::HealthCheckResponse r;
    ASSERT_TRUE(health->Check(&ctx, {}, &r).ok());
    EXPECT_EQ(r.status(), grpc::health::v1::HealthCheckResponse::SERVING);
  }
  // The CLI with the matching flags.
  const std::string cli =
      testing::BinaryPath("src/chorus") +
      " generate Once --max-tokens 4 --addr 127.0.0.1:" + std::to_string(server_->port()) +
      " --tls-ca " + dir_ + "/cert.pem --tls-server-name localhost";
  EXPECT_EQ(WEXITSTATUS(std::system(
                (cli + " --auth-token-file " + dir_ + "/token > /dev/null 2>&1").c_str())),
            0);
  EXPECT_NE(WEXITSTATUS(std::system((cli + " > /dev/null 2>&1").c_str())), 0);
}

}  // namespace
}  // namespace chorus
