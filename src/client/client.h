// The `chorus` client: shared pieces of its subcommands. Depends on the generated gRPC code
// only (no server or engine code).
#pragma once

#include <grpcpp/grpcpp.h>

#include <memory>
#include <set>
#include <string>
#include <vector>

#include "../tools/flags.h"
#include "chorus/v1/chorus.grpc.pb.h"

namespace chorus::client {

// A channel to --addr (TLS with --tls / --tls-ca / --tls-server-name) and the bearer token of
// --auth-token-file, which Prepare adds to every call.
struct Connection {
  std::shared_ptr<grpc::Channel> channel;
  std::string auth;  // "Bearer <token>" or empty
  void Prepare(grpc::ClientContext* ctx) const {
    if (!auth.empty()) ctx->AddMetadata("authorization", auth);
  }
};
bool Connect(const tools::Flags& flags, Connection* out, std::string* error);
// Connection flags with values (every subcommand), and the --tls switch.
std::set<std::string> ConnectionFlags();
// Fills a GenerateRequest from the common flags (--agents, --merge, --budget-ms, ...).
// Returns false with *error naming the flag.
bool BuildRequest(const tools::Flags& flags, const std::string& prompt,
                  chorus::v1::GenerateRequest* req, std::string* error);
// --retries: a call is retried when it failed before the server took it or because the server
// went away: UNAVAILABLE (draining replica, connection refused or reset), CANCELLED from the
// other side (a proxy's RST_STREAM CANCEL for a backend that died, a replica stopping; callers
// never ask about their own cancels), or a stream broken by the transport (RST_STREAM, socket
// closed) reported as UNKNOWN or INTERNAL.
bool Retryable(const grpc::Status& s);
// Sleeps before retry `attempt` (0-based): 50 ms doubling to 1 s, with jitter.
void RetryBackoff(int attempt);
// Flags every generating subcommand accepts.
std::set<std::string> RequestFlags();
int RunBench(int argc, char** argv);

// chorus bench --http (bench_http.cc): the OpenAI-compatible API of a chorusd.
struct HttpTarget {
  std::string host;
  int port = 0;
  std::string model;  // from GET /v1/models
  std::string auth;   // "Bearer <token>" or empty
};
struct HttpOutcome {
  int http_status = 0;  // 0: no response
  std::string error;    // empty on success
  double ttft_ms = -1;
  std::vector<double> itl_ms;
  int output_tokens = 0;
  bool budget_cut = false;
};
bool HttpBenchConnect(const std::string& url, const std::string& auth, HttpTarget* out,
                      std::string* error);
// The streamed /v1/completions body for the same request the gRPC bench sends.
std::string HttpBenchBody(const HttpTarget& t, const chorus::v1::GenerateRequest& req);
HttpOutcome HttpBenchOne(const HttpTarget& t, const std::string& body, int64_t timeout_ms);

}  // namespace chorus::client
