// ChorusServer::Impl (internal to server/): the state of a running server and the
// chorus.v1.Chorus handlers. service.cc answers the RPCs (validate, then submit to the
// runtime); server_start.cc builds everything and starts the listeners; server_lifecycle.cc
// holds the health watchdog, drain and shutdown.
#pragma once

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "chorus/admission/admission.h"
#include "chorus/backends/backend.h"
#include "chorus/core/clock.h"
#include "chorus/core/mutex.h"
#include "chorus/core/request.h"
#include "chorus/http/http_server.h"
#include "chorus/metrics/metrics.h"
#include "chorus/model/model.h"
#include "chorus/runtime/runtime.h"
#include "chorus/server/security.h"
#include "chorus/server/server.h"
#include "chorus/v1/chorus.grpc.pb.h"
#include "chorus/v1/config.pb.h"

namespace chorus {

class ChorusServer::Impl final : public chorus::v1::Chorus::CallbackService {
 public:
  chorus::v1::ServerConfig config;
  std::unique_ptr<Backend> backend;                   // loads the model (and runs it at TP 1)
  std::vector<std::unique_ptr<Backend>> tp_backends;  // one per tensor-parallel rank
  std::unique_ptr<Model> model;
  RealClock clock;
  std::unique_ptr<Metrics> metrics;  // declared before the runtime: outlives it
  std::unique_ptr<Runtime> runtime;
  std::unique_ptr<Admission> admission;
  std::unique_ptr<AdmissionGate> gate;
  std::unique_ptr<grpc::Server> server;
  std::unique_ptr<http::HttpServer> http_server;  // OpenAI-compatible API; null when off
  int port = 0;
  TokenAuth auth;  // no tokens: auth off
  // By identity (config `tenants`).
  std::unordered_map<std::string, chorus::v1::TenantLimits> tenants;

  std::atomic<bool> draining{false};
  std::thread watchdog;
  std::atomic<bool> stop_watchdog{false};
  bool stalled = false;                   // watchdog thread only
  std::atomic<bool> stalled_flag{false};  // `stalled`, for the HTTP /health

  Mutex done_mu;
  CondVar done_cv;
  bool done ABSL_GUARDED_BY(done_mu) = false;

  // ---- service.cc: admission and the RPCs.

  // The caller's identity ("" when auth is off), or UNAUTHENTICATED unless the call carries
  // one of the configured bearer tokens.
  absl::StatusOr<std::string> Authorize(grpc::CallbackServerContext* ctx) const;
  // Validates and submits a gRPC call; returns the error to answer with, or OK when the
  // runtime owns it.
  absl::Status Admit(grpc::CallbackServerContext* ctx, const chorus::v1::GenerateRequest* req,
                     bool stream, std::shared_ptr<ResultSink> sink, const std::string& id);
  // Both APIs (gRPC above, HTTP through its hooks): cheap checks (draining, queue limits, the
  // admission slots) before anything that tokenizes, then validation and submit.
  absl::Status AdmitInput(const std::string& owner, GenerateInput in,
                          std::shared_ptr<ResultSink> sink);
  // The model's name as clients see it (general.name, else the file name).
  std::string ModelId() const;

  grpc::ServerUnaryReactor* Generate(grpc::CallbackServerContext* ctx,
                                     const chorus::v1::GenerateRequest* req,
                                     chorus::v1::GenerateResponse* resp) override;
  grpc::ServerWriteReactor<chorus::v1::GenerateEvent>* GenerateStream(
      grpc::CallbackServerContext* ctx, const chorus::v1::GenerateRequest* req) override;
  grpc::ServerUnaryReactor* ListModels(grpc::CallbackServerContext* ctx,
                                       const chorus::v1::ListModelsRequest* req,
                                       chorus::v1::ListModelsResponse* resp) override;
  grpc::ServerUnaryReactor* GetStats(grpc::CallbackServerContext* ctx,
                                     const chorus::v1::GetStatsRequest* req,
                                     chorus::v1::GetStatsResponse* resp) override;
  grpc::ServerUnaryReactor* Abort(grpc::CallbackServerContext* ctx,
                                  const chorus::v1::AbortRequest* req,
                                  chorus::v1::AbortResponse* resp) override;

  // ---- server_start.cc: listeners.

  // The OpenAI-compatible listener (http/), when http_listen_address is set.
  absl::Status StartHttp();

  // ---- server_lifecycle.cc: health watchdog.

  // Health reflects engine progress, not an open port: with requests in flight and no loop
  // iteration for engine_stall_timeout_ms, report NOT_SERVING until it moves again.
  void StartWatchdog();
  void StopWatchdog();

 private:
  absl::Status AdmitChecked(const std::string& owner, GenerateInput in,
                            std::shared_ptr<ResultSink> sink);
};

}  // namespace chorus
