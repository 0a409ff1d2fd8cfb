// Issue 11 (multi-tenant hardening): what one client must not be able to do to another or to
// the server. Token identities and Abort ownership, unguessable ids, no paths or backend text
// sent to clients, log lines that clients cannot forge, engine exceptions that fail one
// request, and token counts that agree with usage.
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <set>
#include <sstream>
#include <thread>

#include "chorus/admission/admission.h"
#include "chorus/core/log_safe.h"
#include "chorus/gguf/gguf.h"
#include "chorus/gguf/gguf_writer.h"
#include "chorus/server/security.h"
#include "server_fixture.h"

namespace chorus {
namespace {

using testing::ServerTest;
namespace pb = chorus::v1;

pb::GenerateRequest Request(const std::string& prompt, int max_tokens, int agents = 1) {
  pb::GenerateRequest r;
  r.set_prompt(prompt);
  r.set_max_tokens(max_tokens);
  r.mutable_sampling()->set_temperature(0);
  r.mutable_reasoning()->set_agents(agents);
  return r;
}

bool IsLowerHex(const std::string& s) {
  for (char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

TEST(SecurityTest, ConstantTimeEqualsComparesWholeStrings) {
  EXPECT_TRUE(ConstantTimeEquals("s3cret", "s3cret"));
  EXPECT_TRUE(ConstantTimeEquals("", ""));
  EXPECT_FALSE(ConstantTimeEquals("s3cret", "s3creT"));
  EXPECT_FALSE(ConstantTimeEquals("s3cret", "S3cret"));
  EXPECT_FALSE(ConstantTimeEquals("s3cret", "s3cre"));
  EXPECT_FALSE(ConstantTimeEquals("", "x"));
}

TEST(SecurityTest, EachTokenLineIsAnIdentity) {
  auto auth = TokenAuth::Parse("# two tenants\nalpha-token\n\n  beta-token \r\n");
  ASSERT_TRUE(auth.ok()) << auth.status();
  EXPECT_TRUE(auth->enabled());
  EXPECT_EQ(*auth->Identify("Bearer alpha-token"), "token-1");
  EXPECT_EQ(*auth->Identify("Bearer beta-token"), "token-2");
  for (const char* bad : {"", "alpha-token", "Bearer ", "Bearer alpha", "Bearer alpha-token2",
                          "bearer alpha-token", "Bearer  alpha-token"}) {
    EXPECT_EQ(auth->Identify(bad).status().code(), absl::StatusCode::kUnauthenticated) << bad;
  }
  EXPECT_FALSE(TokenAuth::Parse("\n# no token\n").ok());
  EXPECT_FALSE(TokenAuth::Parse("three words here\n").ok());
  EXPECT_FALSE(TokenAuth::Parse("bad/name token\n").ok());
  EXPECT_FALSE(TokenAuth().enabled());
}

// "TENANT TOKEN" lines: several tokens share a tenant identity; plain lines stay token-i.
TEST(SecurityTest, TenantLinesNameTheIdentity) {
  auto auth = TokenAuth::Parse("alpha tok-a\nalpha\ttok-b\nplain-token\n");
  ASSERT_TRUE(auth.ok()) << auth.status();
  EXPECT_EQ(*auth->Identify("Bearer tok-a"), "alpha");
  EXPECT_EQ(*auth->Identify("Bearer tok-b"), "alpha");
  EXPECT_EQ(*auth->Identify("Bearer plain-token"), "token-3");
  EXPECT_TRUE(auth->HasIdentity("alpha"));
  EXPECT_FALSE(auth->HasIdentity("beta"));
  EXPECT_EQ(auth->Identify("Bearer alpha").status().code(), absl::StatusCode::kUnauthenticated);
}

TEST(SecurityTest, ServerRequestIdsAre128RandomBits) {
  std::set<std::string> ids;
  for (int i = 0; i < 1000; ++i) {
    const std::string id = NewRequestId();
    ASSERT_EQ(id.size(), 32u);
    ASSERT_TRUE(IsLowerHex(id)) << id;
    ids.insert(id);
  }
  EXPECT_EQ(ids.size(), 1000u);
}

TEST(SecurityTest, ModelNamesNeverCarryPaths) {
  EXPECT_EQ(ModelDisplayName("llama", "/srv/models/x.gguf"), "llama");
  EXPECT_EQ(ModelDisplayName("", "/srv/secret/models/tiny-7b.Q4_0.gguf"), "tiny-7b.Q4_0");
  EXPECT_EQ(ModelDisplayName("", "model.gguf"), "model");
  EXPECT_EQ(ModelDisplayName("", "/srv/hf/Llama-3.1-8B/"), "Llama-3.1-8B");  // a directory
}

TEST(SecurityTest, LogSafeEscapesControlBytesAndCapsTheLength) {
  EXPECT_EQ(LogSafe("req-1"), "req-1");
  EXPECT_EQ(LogSafe("a\nb\r\x1b[31m\\"), "a\\x0ab\\x0d\\x1b[31m\\x5c");
  EXPECT_EQ(LogSafe("\xe4\xb8\xad"), "\\xe4\\xb8\\xad");
  EXPECT_EQ(LogSafe(std::string(500, 'a'), 8), "aaaaaaaa...");
}

TEST(AdmissionGateTest, BoundsConcurrentAdmissionsWithoutWaiting) {
  AdmissionGate gate(2);
  AdmissionGate::Ticket a = gate.TryEnter(), b = gate.TryEnter();
  EXPECT_TRUE(a && b);
  AdmissionGate::Ticket c = gate.TryEnter();
  EXPECT_FALSE(c);
  EXPECT_EQ(gate.BusyError().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(gate.BusyError().message().find("max_concurrent_admissions 2"), std::string::npos);
  a = AdmissionGate::Ticket();  // released
  EXPECT_EQ(gate.in_use(), 1);
  EXPECT_TRUE(gate.TryEnter());  // a temporary: released at once
  EXPECT_EQ(gate.in_use(), 1);
}

// Two tenants on one server (plaintext here; TLS is covered by security_test.cc).
class MultiTenantServerTest : public ServerTest {
 protected:
  void Configure(pb::ServerConfig& c) override {
    path_ = testing::TempPath("tokens");
    std::ofstream(path_) << "# tenants\nalpha-token\nbeta-token\n";
    c.set_auth_token_path(path_);
  }
  void TearDown() override {
    ServerTest::TearDown();
    std::remove(path_.c_str());
  }
  static void As(grpc::ClientContext& ctx, const std::string& token) {
    ctx.AddMetadata("authorization", "Bearer " + token);
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  }
  grpc::Status GenerateAs(const std::string& token, const pb::GenerateRequest& r,
                          pb::GenerateResponse* resp) {
    grpc::ClientContext ctx;
    As(ctx, token);
    return stub_->Generate(&ctx, r, resp);
  }
  bool AbortAs(const std::string& token, const std::string& id) {
    grpc::ClientContext ctx;
    As(ctx, token);
    pb::AbortRequest ar;
    ar.set_request_id(id);
    pb::AbortResponse resp;
    EXPECT_TRUE(stub_->Abort(&ctx, ar, &resp).ok());
    return resp.found();
  }
  int InFlightAs(const std::string& token) {
    grpc::ClientContext ctx;
    As(ctx, token);
    pb::GetStatsResponse s;
    EXPECT_TRUE(stub_->GetStats(&ctx, {}, &s).ok());
    return s.running_requests() + s.waiting_requests();
  }
  std::string path_;
};

// Issue 11, finding 4: any client could abort (and probe) any request id.
TEST_F(MultiTenantServerTest, AbortFindsOnlyTheCallersOwnRequests) {
  pb::GenerateRequest long_request = Request("Once upon a time", 2000, 4);
  long_request.set_request_id("job-1");
  grpc::Status alpha_status;
  std::thread alpha([&] {
    pb::GenerateResponse resp;
    alpha_status = GenerateAs("alpha-token", long_request, &resp);
  });
  for (int i = 0; i < 2000 && InFlightAs("alpha-token") == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  // Beta neither sees nor cancels alpha's request, and may use the same id for its own.
  EXPECT_FALSE(AbortAs("beta-token", "job-1"));
  pb::GenerateRequest mine = Request("Lily", 4);
  mine.set_request_id("job-1");
  pb::GenerateResponse beta_resp;
  const grpc::Status beta_status = GenerateAs("beta-token", mine, &beta_resp);
  EXPECT_TRUE(beta_status.ok()) << beta_status.error_message();
  EXPECT_EQ(beta_resp.request_id(), "job-1");
  // The owner can.
  EXPECT_TRUE(AbortAs("alpha-token", "job-1"));
  alpha.join();
  EXPECT_EQ(alpha_status.error_code(), grpc::CANCELLED) << alpha_status.error_message();
}

// Issue 11, finding 4: server ids were sequential ("chorus-N"), so easy to guess.
TEST_F(MultiTenantServerTest, ServerAssignedIdsAreRandomHex) {
  pb::GenerateResponse a, b;
  ASSERT_TRUE(GenerateAs("alpha-token", Request("Once", 2), &a).ok());
  ASSERT_TRUE(GenerateAs("alpha-token", Request("Once", 2), &b).ok());
  EXPECT_EQ(a.request_id().size(), 32u);
  EXPECT_TRUE(IsLowerHex(a.request_id())) << a.request_id();
  EXPECT_NE(a.request_id(), b.request_id());
}

// Issue 11, finding 9: ListModels fell back to the configured path when the model has no
// general.name. The test model is stories260K without that key, in a revealing directory.
class UnnamedModelServerTest : public ServerTest {
 protected:
  void Configure(pb::ServerConfig& c) override {
    dir_ = testing::TempPath("secret-models");
    std::filesystem::create_directories(dir_);
    auto src = GgufFile::Open(testing::SourcePath("models/stories260K.gguf"));
    ASSERT_TRUE(src.ok()) << src.status();
    GgufWriter w(static_cast<uint32_t>((*src)->alignment()));
    for (const auto& kv : (*src)->metadata()) {
      if (kv.key != "general.name" && kv.key != "general.alignment") w.CopyValue(kv.key, kv.value);
    }
    for (const auto& t : (*src)->tensors()) {
      w.AddTensor(t.name, t.type, std::vector<int64_t>(t.ne, t.ne + t.n_dims),
                  std::string(reinterpret_cast<const char*>(t.data), t.num_bytes));
    }
    ASSERT_TRUE(w.WriteFile(dir_ + "/tiny-story.gguf").ok());
    c.set_model_path(dir_ + "/tiny-story.gguf");
  }
  void TearDown() override {
    ServerTest::TearDown();
    std::filesystem::remove_all(dir_);
  }
  std::string dir_;
};

TEST_F(UnnamedModelServerTest, ListModelsNeverRevealsTheModelPath) {
  grpc::ClientContext ctx;
  pb::ListModelsResponse models;
  ASSERT_TRUE(stub_->ListModels(&ctx, {}, &models).ok());
  ASSERT_EQ(models.models_size(), 1);
  EXPECT_EQ(models.models(0).name(), "tiny-story");
}

// Issue 11, finding 9: a client-chosen request id could forge log lines.
TEST_F(ServerTest, RequestIdsCannotForgeLogLines) {
  std::ostringstream captured;
  auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(captured);
  // Every logger: the server's lines go through its module logger (core/log.h).
  spdlog::apply_all([&](std::shared_ptr<spdlog::logger> l) { l->sinks().push_back(sink); });
  pb::GenerateRequest r = Request("Once", 2);
  r.set_request_id("x\n[chorusd] [info] FORGED all is well");
  pb::GenerateResponse resp;
  const grpc::Status s = Generate(r, &resp);
  spdlog::apply_all([&](std::shared_ptr<spdlog::logger> l) { l->sinks().pop_back(); });
  EXPECT_EQ(s.error_code(), grpc::INVALID_ARGUMENT);
  const std::string log = captured.str();
  EXPECT_NE(log.find("x\\x0a[chorusd] [info] FORGED"), std::string::npos) << log;
  EXPECT_EQ(log.find("\n[chorusd] [info] FORGED"), std::string::npos) << log;
}

// Issue 11, finding 9: Stats.tokens_generated missed the first token of every agent (sampled
// at the fork) and disagreed with usage and chorus_generated_tokens_total.
TEST_F(ServerTest, StatsCountEveryTokenTheDraftsHold) {
  const int64_t before = IdleStats().tokens_generated();
  pb::GenerateRequest r = Request("Once upon a time", 12, 3);
  r.mutable_reasoning()->set_merge(pb::BEST_LOGPROB);
  pb::GenerateResponse resp;
  ASSERT_TRUE(Generate(r, &resp).ok());
  EXPECT_EQ(resp.usage().completion_tokens(), 36);
  EXPECT_EQ(IdleStats().tokens_generated() - before, resp.usage().completion_tokens());
}

// Engine-thread faults injected before a step: 1 = an exception with backend detail,
// 2 = std::bad_alloc.
std::atomic<int> g_engine_fault{0};

class FaultyEngineServerTest : public ServerTest {
 protected:
  std::function<void()> BeforeStep() override {
    return [] {
      const int fault = g_engine_fault.exchange(0);
      if (fault == 1) throw std::runtime_error("cudaErrorIllegalAddress at /secret/kernels.cu");
      if (fault == 2) throw std::bad_alloc();
    };
  }
};

// Issue 11, finding 9: an exception on the engine thread ended the process, and backend
// error text went to clients.
TEST_F(FaultyEngineServerTest, EngineExceptionsFailTheRequestWithAGenericMessage) {
  pb::GenerateRequest r = Request("Once upon a time", 8);
  r.set_request_id("victim-1");
  pb::GenerateResponse resp;
  g_engine_fault = 1;
  grpc::Status s = Generate(r, &resp);
  EXPECT_EQ(s.error_code(), grpc::INTERNAL) << s.error_message();
  EXPECT_NE(s.error_message().find("victim-1"), std::string::npos) << s.error_message();
  EXPECT_EQ(s.error_message().find("secret"), std::string::npos) << s.error_message();
  EXPECT_EQ(s.error_message().find("cudaError"), std::string::npos) << s.error_message();

  r.set_request_id("victim-2");
  g_engine_fault = 2;
  s = Generate(r, &resp);
  EXPECT_EQ(s.error_code(), grpc::RESOURCE_EXHAUSTED) << s.error_message();
  EXPECT_NE(s.error_message().find("victim-2"), std::string::npos) << s.error_message();

  r.set_request_id("survivor");
  EXPECT_TRUE(Generate(r, &resp).ok());  // still serving
  const auto stats = IdleStats();
  EXPECT_EQ(stats.requests_failed(), 2);
  EXPECT_EQ(stats.kv_blocks_used(), 0);
}

// Issue 11, finding 3: cache_salt isolates prefix-cache entries between requests.
TEST_F(ServerTest, CacheSaltIsolatesPrefixCacheHits) {
  pb::GenerateRequest r = Request(
      "Once upon a time, there was a little girl named Lily. She loved to play outside in the "
      "park. One day, she saw a big red ball.",
      4);
  r.set_cache_salt("tenant-a-secret");
  pb::GenerateResponse first, other_salt, no_salt, same_salt;
  ASSERT_TRUE(Generate(r, &first).ok());
  EXPECT_EQ(first.usage().cached_prompt_tokens(), 0);
  pb::GenerateRequest b = r;
  b.set_cache_salt("tenant-b-secret");
  ASSERT_TRUE(Generate(b, &other_salt).ok());
  EXPECT_EQ(other_salt.usage().cached_prompt_tokens(), 0);
  b.clear_cache_salt();
  ASSERT_TRUE(Generate(b, &no_salt).ok());
  EXPECT_EQ(no_salt.usage().cached_prompt_tokens(), 0);
  ASSERT_TRUE(Generate(r, &same_salt).ok());
  EXPECT_GT(same_salt.usage().cached_prompt_tokens(), 0);
  EXPECT_EQ(same_salt.text(), first.text());
}

// Issue 11, finding 5: tenants with limits. Alpha is limited; beta (no tenants entry) has the
// server-wide limits only.
class TenantLimitsServerTest : public MultiTenantServerTest {
 protected:
  void Configure(pb::ServerConfig& c) override {
    path_ = testing::TempPath("tenant-tokens");
    std::ofstream(path_) << "alpha alpha-token\nbeta beta-token\n";
    c.set_auth_token_path(path_);
    pb::TenantLimits* t = c.add_tenants();
    t->set_name("alpha");
    t->set_max_priority(5);
    t->set_max_agents_per_request(4);
    t->set_max_inflight_agents(6);
    t->set_max_tokens_per_request(2000);
  }
};

TEST_F(TenantLimitsServerTest, PerRequestLimitsNameTheTenantAndSpareOthers) {
  pb::GenerateResponse resp;
  pb::GenerateRequest urgent = Request("Once", 4);
  urgent.set_priority(10);
  grpc::Status s = GenerateAs("alpha-token", urgent, &resp);
  EXPECT_EQ(s.error_code(), grpc::INVALID_ARGUMENT);
  EXPECT_NE(s.error_message().find("tenants.max_priority"), std::string::npos) << s.error_message();
  EXPECT_TRUE(GenerateAs("beta-token", urgent, &resp).ok());
  s = GenerateAs("alpha-token", Request("Once", 4, 8), &resp);
  EXPECT_EQ(s.error_code(), grpc::INVALID_ARGUMENT);
  EXPECT_NE(s.error_message().find("tenants.max_agents_per_request"), std::string::npos)
      << s.error_message();
  EXPECT_TRUE(GenerateAs("beta-token", Request("Once", 4, 8), &resp).ok());
  s = GenerateAs("alpha-token", Request("Once", 2500), &resp);
  EXPECT_EQ(s.error_code(), grpc::INVALID_ARGUMENT);
  EXPECT_NE(s.error_message().find("tenants.max_tokens_per_request"), std::string::npos)
      << s.error_message();
  EXPECT_TRUE(GenerateAs("alpha-token", Request("Once", 4, 4), &resp).ok());
}

TEST_F(TenantLimitsServerTest, AgentsInFlightAreBoundedPerTenant) {
  pb::GenerateRequest long_request = Request("Once upon a time", 2000, 4);
  long_request.set_request_id("long");
  grpc::Status long_status;
  std::thread alpha([&] {
    pb::GenerateResponse resp;
    long_status = GenerateAs("alpha-token", long_request, &resp);
  });
  for (int i = 0; i < 2000 && InFlightAs("alpha-token") == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  pb::GenerateResponse resp;
  // 4 in flight + 4 > 6: refused, naming the tenant and the limit; 4 + 2 fits; beta is not held.
  const grpc::Status over = GenerateAs("alpha-token", Request("Lily", 4, 4), &resp);
  EXPECT_EQ(over.error_code(), grpc::RESOURCE_EXHAUSTED) << over.error_message();
  EXPECT_NE(over.error_message().find("tenant 'alpha'"), std::string::npos) << over.error_message();
  EXPECT_NE(over.error_message().find("max_inflight_agents 6"), std::string::npos)
      << over.error_message();
  EXPECT_TRUE(GenerateAs("alpha-token", Request("Lily", 4, 2), &resp).ok());
  EXPECT_TRUE(GenerateAs("beta-token", Request("Lily", 4, 8), &resp).ok());
  EXPECT_TRUE(AbortAs("alpha-token", "long"));
  alpha.join();
  EXPECT_EQ(long_status.error_code(), grpc::CANCELLED);
  // The slots come back when the request ends.
  EXPECT_TRUE(GenerateAs("alpha-token", Request("Lily", 4, 4), &resp).ok());
  const std::string text = testing::HttpGet(server_->metrics_port(), "/metrics");
  EXPECT_NE(
      text.find("chorus_tenant_rejections_total{reason=\"resource_exhausted\",tenant=\"alpha\"} 1"),
      std::string::npos)
      << text;
  EXPECT_NE(text.find("chorus_tenant_requests_total{status=\"ok\",tenant=\"beta\"} 1"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("chorus_tenant_generated_tokens_total{tenant=\"alpha\"}"), std::string::npos);
}

}  // namespace
}  // namespace chorus
