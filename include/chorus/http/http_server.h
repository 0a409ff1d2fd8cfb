// The OpenAI-compatible HTTP listener (issue 15), beside gRPC on the same runtime: requests go
// through the server's own auth and admission hooks (the same limits, identities, metrics and
// drain as gRPC), results come back through a ResultSink. cpp-httplib from Debian: one worker
// thread per open connection (max_connections), so handlers may block on their request.
//
//   GET  /v1/models, /v1/models/{id}
//   POST /v1/completions, /v1/chat/completions   (openai.h: fields, "chorus" extension, SSE)
//   GET  /health                                  200 serving, 503 draining
//
// A client that goes away (closed connection, failed write, unread stream past the backlog)
// cancels its request; the runtime frees its slot and KV blocks at its next step.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "chorus/admission/admission.h"
#include "chorus/core/request.h"

namespace chorus::http {

struct HttpOptions {
  std::string listen_address;                  // HOST:PORT (port 0 picks one)
  int max_connections = 64;                    // worker threads; more connections wait to be served
  int64_t max_body_bytes = 2 << 20;            // larger bodies get 413
  int64_t stream_backlog_max_bytes = 4 << 20;  // unread SSE bytes before the request is cancelled
  int max_agents = 16;                         // bounds `n`
  std::string model_id;                        // the one model served (GET /v1/models, `model`)
  int64_t created = 0;                         // unix seconds (the model's "created")
};

struct HttpHooks {
  // The caller's identity for an "Authorization" header value, or UNAUTHENTICATED.
  std::function<absl::StatusOr<std::string>(std::string_view authorization)> authorize;
  // Admission + runtime submit (as gRPC's): on OK the sink is called, exactly once at the end.
  std::function<absl::Status(const std::string& owner, GenerateInput in,
                             std::shared_ptr<ResultSink> sink)>
      submit;
  std::function<std::string()> new_request_id;
  std::function<bool()> serving;  // false while draining (GET /health)
  // Called once per answered request (metrics); may be null.
  std::function<void(std::string_view endpoint, int http_status)> on_response;
};

class HttpServer {
 public:
  static absl::StatusOr<std::unique_ptr<HttpServer>> Start(const HttpOptions& options,
                                                           HttpHooks hooks);
  // Stops listening; returns when every handler has returned (their sinks must complete).
  ~HttpServer();
  int port() const;
  // No submit call runs after this returns (new requests get 503); the listener closes.
  void StopAccepting();

  class Impl;

 private:
  explicit HttpServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace chorus::http
