// chorus: command-line client for chorusd.
//   chorus generate PROMPT [options]   the merged answer (--drafts: every draft and the vote)
//   chorus stream PROMPT [options]     tokens as they arrive, agents tagged
//   chorus health | models | stats     exit 0 only when the server is healthy / answers
//   chorus bench [options]             load generator (chorus bench --help)
//   chorus eval --dataset FILE [opts]  accuracy against latency and tokens (chorus eval --help)
#include <google/protobuf/util/json_util.h>

#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>

#include "absl/status/status.h"
#include "client.h"
#include "eval.h"
#include "grpc/health/v1/health.grpc.pb.h"

namespace chorus::client {
namespace pb = chorus::v1;

constexpr char kUsage[] =
    "usage: chorus <generate|stream|health|models|stats|bench> [--addr HOST:PORT] ...\n"
    "  generate PROMPT  [--agents N | --min-agents A --max-agents B] [--merge vote|confidence|\n"
    "                   best_logprob|first|synthesize]\n"
    "                   [--budget-ms MS] [--max-tokens N] [--temperature T] [--top-p P]\n"
    "                   [--top-k K] [--seed S] [--stop STR] [--timeout-ms MS] [--retries N] "
    "[--drafts] [--json]\n"
    "                   [--confidence-threshold P] [--confidence-window W]\n"
    "  stream PROMPT    same options; prints tokens as they arrive, tagged [agent]\n"
    "                   (a PROMPT that starts with '-' goes after --)\n"
    "  health           exit 0 only when the server reports SERVING\n"
    "  models, stats    print the server's model and counters\n"
    "  bench            load generator; see chorus bench --help\n"
    "  eval             accuracy vs latency per agents/merge setting; see chorus eval --help\n"
    "  --addr defaults to 127.0.0.1:50051; --tls [--tls-ca PEM] [--tls-server-name NAME] for TLS;\n"
    "  --auth-token-file FILE sends \"authorization: Bearer <token>\"\n";

static void SetDeadline(const tools::Flags& f, grpc::ClientContext* ctx) {
  int64_t ms = 0;
  std::string e;
  if (f.GetNumber<int64_t>("timeout-ms", 0, 0, int64_t{1} << 40, &ms, &e) && ms > 0) {
    ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(ms));
  }
}

static int Fail(const std::string& msg) {
  std::fprintf(stderr, "chorus: %s\n", msg.c_str());
  return 1;
}

// "rpc failed: INVALID_ARGUMENT (3) <message>": the name for people and scripts, the number too.
static int FailRpc(const grpc::Status& s) {
  // gRPC and absl share the canonical code numbers.
  return Fail(
      "rpc failed: " + absl::StatusCodeToString(static_cast<absl::StatusCode>(s.error_code())) +
      " (" + std::to_string(s.error_code()) + ") " + s.error_message());
}

// chorus stream: tokens as they arrive, tagged [agent] when several agents run.
static int Stream(pb::Chorus::Stub* stub, grpc::ClientContext* ctx,
                  const pb::GenerateRequest& req) {
  pb::GenerateResponse resp;
  auto reader = stub->GenerateStream(ctx, req);
  pb::GenerateEvent e;
  int last_agent = -1;
  const bool tag = req.reasoning().agents() > 1;
  while (reader->Read(&e)) {
    if (e.has_delta()) {
      if (tag && e.delta().agent() != last_agent) std::printf("\n[%d] ", e.delta().agent());
      last_agent = e.delta().agent();
      std::fputs(e.delta().text().c_str(), stdout);
      std::fflush(stdout);
    } else if (e.has_result()) {
      resp = e.result();
    }
  }
  const grpc::Status s = reader->Finish();
  if (!s.ok()) return FailRpc(s);
  if (tag) {
    std::printf("\n[merged %s, winner %d] %s",
                pb::MergeStrategy_Name(resp.merge().strategy()).c_str(), resp.merge().winner(),
                resp.text().c_str());
  }
  std::printf("\n");
  return 0;
}

// --drafts: every draft, then the vote.
static void PrintDrafts(const pb::GenerateResponse& resp) {
  for (const auto& d : resp.drafts()) {
    std::printf("--- draft %d (%s, %d tokens, mean logprob %.3f, answer '%s')\n%s\n", d.agent(),
                pb::FinishReason_Name(d.finish_reason()).c_str(), d.num_tokens(), d.mean_logprob(),
                d.answer().c_str(), d.text().c_str());
  }
  std::printf("--- vote (%s): ", pb::MergeStrategy_Name(resp.merge().strategy()).c_str());
  for (const auto& [a, v] : resp.merge().votes()) std::printf("'%s'=%.2f ", a.c_str(), v);
  std::printf("winner %d\n--- answer\n", resp.merge().winner());
}

static int Generate(int argc, char** argv, bool stream) {
  auto names = RequestFlags();
  tools::Flags f(names, {"drafts", "json", "help", "tls"});
  f.AllowPositional();
  std::string error;
  if (!f.Parse(argc, argv, &error)) return Fail(error + " (see --help)");
  if (f.Has("help")) {
    std::fputs(kUsage, stdout);
    return 0;
  }
  if (f.positional().size() != 1) {
    return Fail("expected exactly one PROMPT argument (use \"\" for BOS)");
  }
  pb::GenerateRequest req;
  if (!BuildRequest(f, f.positional()[0], &req, &error)) return Fail(error);
  req.mutable_reasoning()->set_return_drafts(f.Has("drafts") || f.Has("json"));
  Connection conn;
  if (!Connect(f, &conn, &error)) return Fail(error);
  auto stub = pb::Chorus::NewStub(conn.channel);
  grpc::ClientContext ctx;
  conn.Prepare(&ctx);
  SetDeadline(f, &ctx);
  if (stream) return Stream(stub.get(), &ctx, req);
  pb::GenerateResponse resp;
  int retries = 0;
  if (!f.GetNumber("retries", 0, 0, 100, &retries, &error)) return Fail(error);
  grpc::Status s = stub->Generate(&ctx, req, &resp);
  for (int attempt = 0; !s.ok() && attempt < retries && Retryable(s); ++attempt) {
    RetryBackoff(attempt);
    grpc::ClientContext again;
    conn.Prepare(&again);
    SetDeadline(f, &again);
    s = stub->Generate(&again, req, &resp);
  }
  if (!s.ok()) return FailRpc(s);
  if (f.Has("json")) {
    std::string json;
    google::protobuf::util::JsonPrintOptions o;
    o.add_whitespace = true;
    o.preserve_proto_field_names = true;
    (void)google::protobuf::util::MessageToJsonString(resp, &json, o);
    std::fputs(json.c_str(), stdout);
    return 0;
  }
  if (f.Has("drafts")) PrintDrafts(resp);
  std::printf("%s\n", resp.text().c_str());
  return 0;
}

static int Simple(int argc, char** argv, const std::string& cmd) {
  std::set<std::string> names = ConnectionFlags();
  names.insert("timeout-ms");
  tools::Flags f(names, {"help", "tls"});
  std::string error;
  if (!f.Parse(argc, argv, &error)) return Fail(error + " (see --help)");
  if (f.Has("help")) {
    std::fputs(kUsage, stdout);
    return 0;
  }
  Connection conn;
  if (!Connect(f, &conn, &error)) return Fail(error);
  auto ch = conn.channel;
  grpc::ClientContext ctx;
  conn.Prepare(&ctx);
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  SetDeadline(f, &ctx);
  if (cmd == "health") {
    auto stub = grpc::health::v1::Health::NewStub(ch);
    grpc::health::v1::HealthCheckResponse r;
    const grpc::Status s = stub->Check(&ctx, {}, &r);
    if (!s.ok()) return FailRpc(s);
    std::printf("%s\n",
                grpc::health::v1::HealthCheckResponse::ServingStatus_Name(r.status()).c_str());
    return r.status() == grpc::health::v1::HealthCheckResponse::SERVING ? 0 : 1;
  }
  auto stub = pb::Chorus::NewStub(ch);
  std::string text;
  google::protobuf::util::JsonPrintOptions o;
  o.add_whitespace = true;
  o.always_print_primitive_fields = true;
  o.preserve_proto_field_names = true;
  grpc::Status s;
  if (cmd == "models") {
    pb::ListModelsResponse r;
    s = stub->ListModels(&ctx, {}, &r);
    (void)google::protobuf::util::MessageToJsonString(r, &text, o);
  } else {
    pb::GetStatsResponse r;
    s = stub->GetStats(&ctx, {}, &r);
    (void)google::protobuf::util::MessageToJsonString(r, &text, o);
  }
  if (!s.ok()) return FailRpc(s);
  std::fputs(text.c_str(), stdout);
  return 0;
}

}  // namespace chorus::client

int main(int argc, char** argv) {
  using namespace chorus::client;
  if (argc < 2 || std::string(argv[1]) == "--help" || std::string(argv[1]) == "help") {
    std::fputs(kUsage, argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  const std::string cmd = argv[1];
  // Subcommand parsers see argv without the subcommand.
  std::vector<char*> rest = {argv[0]};
  for (int i = 2; i < argc; ++i) rest.push_back(argv[i]);
  const int n = static_cast<int>(rest.size());
  if (cmd == "generate") return Generate(n, rest.data(), false);
  if (cmd == "stream") return Generate(n, rest.data(), true);
  if (cmd == "health" || cmd == "models" || cmd == "stats") return Simple(n, rest.data(), cmd);
  if (cmd == "bench") return RunBench(n, rest.data());
  if (cmd == "eval") return RunEval(n, rest.data());
  std::fprintf(stderr, "chorus: unknown command '%s'\n%s", cmd.c_str(), kUsage);
  return 2;
}
