// The chorus client's shared pieces: connection and request flags, retries.
#include <fstream>
#include <random>
#include <sstream>
#include <thread>

#include "chorus/core/secret_file.h"
#include "client.h"

namespace chorus::client {
namespace pb = chorus::v1;

// A secret file (core/secret_file.h); false with *error naming the flag and why.
static bool ReadFile(const std::string& flag, const std::string& path, std::string* out,
                     std::string* error) {
  auto data = ReadSecretFile(path);
  if (!data.ok()) {
    *error = "--" + flag + ": " + std::string(data.status().message());
    return false;
  }
  *out = std::move(*data);
  return true;
}

std::set<std::string> ConnectionFlags() {
  return {"addr", "tls-ca", "tls-server-name", "auth-token-file"};
}

bool Connect(const tools::Flags& flags, Connection* out, std::string* error) {
  std::shared_ptr<grpc::ChannelCredentials> creds = grpc::InsecureChannelCredentials();
  grpc::ChannelArguments args;
  // Reconnect soon after the server comes back (a restarted or rescheduled chorusd): gRPC's
  // default backoff grows to 2 minutes, so a client that saw the server go away would keep
  // failing UNAVAILABLE long after it is serving again.
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
  if (flags.Has("tls") || flags.Has("tls-ca")) {
    grpc::SslCredentialsOptions ssl;
    if (flags.Has("tls-ca") &&
        !ReadFile("tls-ca", flags.Get("tls-ca"), &ssl.pem_root_certs, error)) {
      return false;
    }
    creds = grpc::SslCredentials(ssl);
    if (flags.Has("tls-server-name")) args.SetSslTargetNameOverride(flags.Get("tls-server-name"));
  }
  if (flags.Has("auth-token-file")) {
    std::string token;
    if (!ReadFile("auth-token-file", flags.Get("auth-token-file"), &token, error)) {
      return false;
    }
    while (!token.empty() &&
           (token.back() == '\n' || token.back() == '\r' || token.back() == ' ')) {
      token.pop_back();
    }
    out->auth = "Bearer " + token;
  }
  out->channel = grpc::CreateCustomChannel(flags.Get("addr", "127.0.0.1:50051"), creds, args);
  return true;
}

bool Retryable(const grpc::Status& s) {
  switch (s.error_code()) {
    case grpc::StatusCode::UNAVAILABLE:
      return true;
    case grpc::StatusCode::CANCELLED:
      // Callers never ask about a cancel of their own (they stop first), so this one came from
      // the other side: a proxy resetting the stream of a backend that went away (HAProxy answers
      // with RST_STREAM CANCEL), or a replica that stopped with the call unfinished. A Generate
      // call has no side effects; another replica can answer it.
      return true;
    case grpc::StatusCode::UNKNOWN:
    case grpc::StatusCode::INTERNAL:
      break;
    default:
      return false;
  }
  const std::string& m = s.error_message();
  for (const char* transport :
       {"RST_STREAM", "Socket closed", "Connection reset", "Stream removed", "connection"}) {
    if (m.find(transport) != std::string::npos) return true;
  }
  return false;
}

void RetryBackoff(int attempt) {
  static thread_local std::mt19937 rng(std::random_device{}());
  const double base = std::min(1000.0, 50.0 * (1 << std::min(attempt, 5)));
  const double ms = base * std::uniform_real_distribution<double>(0.5, 1.0)(rng);
  std::this_thread::sleep_for(std::chrono::duration<double, std::milli>(ms));
}

std::set<std::string> RequestFlags() {
  std::set<std::string> f = {"agents",
                             "merge",
                             "budget-ms",
                             "max-tokens",
                             "temperature",
                             "top-p",
                             "top-k",
                             "seed",
                             "stop",
                             "timeout-ms",
                             "priority",
                             "retries",
                             "min-agents",
                             "max-agents",
                             "confidence-threshold",
                             "confidence-window"};
  for (const auto& c : ConnectionFlags()) f.insert(c);
  return f;
}

bool BuildRequest(const tools::Flags& f, const std::string& prompt, pb::GenerateRequest* req,
                  std::string* error) {
  int agents, max_tokens, top_k, priority, min_agents, max_agents, conf_window;
  int64_t budget, seed;
  float temperature, top_p, conf_threshold;
  if (!f.GetNumber("agents", 1, 1, 1024, &agents, error) ||
      !f.GetNumber("max-tokens", 128, 1, 1 << 24, &max_tokens, error) ||
      !f.GetNumber("top-k", 0, 0, 100000, &top_k, error) ||
      !f.GetNumber("priority", 0, -100, 100, &priority, error) ||
      !f.GetNumber("min-agents", 0, 0, 1024, &min_agents, error) ||
      !f.GetNumber("max-agents", 0, 0, 1024, &max_agents, error) ||
      !f.GetNumber<int64_t>("budget-ms", 0, 0, int64_t{1} << 40, &budget, error) ||
      !f.GetNumber<int64_t>("seed", 0, 0, INT64_MAX, &seed, error) ||
      !f.GetNumber("temperature", 0.8f, 0.0f, 100.0f, &temperature, error) ||
      !f.GetNumber("top-p", 1.0f, 0.0f, 1.0f, &top_p, error) ||
      !f.GetNumber("confidence-threshold", 0.0f, 0.0f, 0.9999f, &conf_threshold, error) ||
      !f.GetNumber("confidence-window", 0, 0, 2048, &conf_window, error)) {
    return false;
  }
  req->set_prompt(prompt);
  req->set_max_tokens(max_tokens);
  req->set_latency_budget_ms(budget);
  req->set_priority(priority);
  auto* s = req->mutable_sampling();
  s->set_temperature(temperature);
  s->set_top_p(top_p);
  s->set_top_k(top_k);
  s->set_seed(static_cast<uint64_t>(seed));
  if (max_agents > 0) {  // elastic: the server chooses in [min_agents, max_agents]
    if (f.Has("agents")) {
      *error =
          "--agents and --max-agents exclude each other (--max-agents asks for elastic agents)";
      return false;
    }
    req->mutable_reasoning()->set_min_agents(min_agents);
    req->mutable_reasoning()->set_max_agents(max_agents);
  } else {
    req->mutable_reasoning()->set_agents(agents);
  }
  if (f.Has("stop")) req->add_stop(f.Get("stop"));
  const std::string merge = f.Get("merge", "vote");
  pb::MergeStrategy m;
  std::string upper;
  for (char c : merge) {
    upper.push_back(static_cast<char>(std::toupper(static_cast<unsigned char>(c))));
  }
  if (!pb::MergeStrategy_Parse(upper, &m)) {
    *error =
        "--merge must be vote, confidence, best_logprob, first or synthesize, got '" + merge + "'";
    return false;
  }
  req->mutable_reasoning()->set_merge(m);
  // 0 leaves the server's default (CONFIDENCE's early stop: window probability floor, tokens).
  req->mutable_reasoning()->set_confidence_threshold(conf_threshold);
  req->mutable_reasoning()->set_confidence_window(conf_window);
  return true;
}

}  // namespace chorus::client
