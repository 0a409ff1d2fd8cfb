// chorus.v1.Chorus over the gRPC callback API: handlers authorize, validate and submit to the
// runtime (convert.h maps protos and statuses, reactors.h carries results back). The server is
// built in server_start.cc and drained in server_lifecycle.cc.
#include <grpcpp/grpcpp.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <exception>
#include <memory>
#include <string>
#include <string_view>
#include <utility>

#include "chorus/admission/admission.h"
#include "chorus/core/log.h"
#include "chorus/core/log_safe.h"
#include "chorus/core/status.h"
#include "chorus/core/str_cat.h"
#include "chorus/server/security.h"
#include "convert.h"
#include "reactors.h"
#include "service_impl.h"

namespace chorus {
namespace {

using server::FromProto;
using server::GenerateReactor;
using server::StreamReactor;
using server::ToGrpc;
using server::UnarySink;
namespace pb = ::chorus::v1;

// A tenant's limits on one request (issue 11, finding 5): INVALID_ARGUMENT naming the field,
// the tenant and the limit; the default prefix-cache salt is the tenant's own.
absl::Status ApplyTenantLimits(const pb::TenantLimits& t, int64_t default_max_tokens,
                               GenerateInput* in) {
  if (t.has_max_priority() && in->priority > t.max_priority()) {
    return absl::InvalidArgumentError(StrCat("priority: tenant '", t.name(),
                                             "' may ask for at most ", t.max_priority(),
                                             " (tenants.max_priority), got ", in->priority));
  }
  const bool elastic = in->max_agents > 0;
  const int64_t agents = elastic ? in->max_agents : std::max<int64_t>(1, in->agents);
  if (t.has_max_agents_per_request() && agents > t.max_agents_per_request()) {
    return absl::InvalidArgumentError(
        StrCat(elastic ? "reasoning.max_agents" : "reasoning.agents", ": tenant '", t.name(),
               "' may run at most ", t.max_agents_per_request(),
               " agents per request (tenants.max_agents_per_request), got ", agents));
  }
  const int64_t max_tokens = in->max_tokens == 0 ? default_max_tokens : in->max_tokens;
  if (t.has_max_tokens_per_request() && max_tokens > t.max_tokens_per_request()) {
    return absl::InvalidArgumentError(
        StrCat("max_tokens: tenant '", t.name(), "' may ask for at most ",
               t.max_tokens_per_request(), " (tenants.max_tokens_per_request), got ", max_tokens));
  }
  if (!t.shared_prefix_cache() && in->cache_salt.empty()) in->cache_salt = "tenant:" + t.name();
  return absl::OkStatus();
}

grpc::ServerUnaryReactor* Reject(grpc::CallbackServerContext* ctx, const absl::Status& s) {
  auto* r = ctx->DefaultReactor();
  r->Finish(ToGrpc(s));
  return r;
}

grpc::ServerUnaryReactor* FinishOk(grpc::CallbackServerContext* ctx) {
  auto* r = ctx->DefaultReactor();
  r->Finish(grpc::Status::OK);
  return r;
}

}  // namespace

absl::StatusOr<std::string> ChorusServer::Impl::Authorize(grpc::CallbackServerContext* ctx) const {
  if (!auth.enabled()) return std::string();
  const auto& md = ctx->client_metadata();
  auto it = md.find("authorization");
  if (it == md.end()) return auth.Identify("");
  return auth.Identify(std::string_view(it->second.data(), it->second.size()));
}

absl::Status ChorusServer::Impl::Admit(grpc::CallbackServerContext* ctx,
                                       const pb::GenerateRequest* req, bool stream,
                                       std::shared_ptr<ResultSink> sink, const std::string& id) {
  if (draining) return absl::UnavailableError("server is draining; retry on another replica");
  absl::StatusOr<std::string> owner = Authorize(ctx);
  if (!owner.ok()) return owner.status();
  GenerateInput in = FromProto(*req);
  in.stream = stream;
  in.request_id = id;
  const auto deadline = ctx->deadline();
  if (deadline != std::chrono::system_clock::time_point::max()) {
    const double left =
        std::chrono::duration<double, std::milli>(deadline - std::chrono::system_clock::now())
            .count();
    in.rpc_deadline_ms = clock.NowMs() + left;
  }
  return AdmitInput(*owner, std::move(in), std::move(sink));
}

absl::Status ChorusServer::Impl::AdmitInput(const std::string& owner, GenerateInput in,
                                            std::shared_ptr<ResultSink> sink) {
  absl::Status s = AdmitChecked(owner, std::move(in), std::move(sink));
  if (!s.ok() && metrics) {
    std::string reason = absl::StatusCodeToString(s.code());
    for (char& c : reason) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    metrics->OnRejected(owner, reason);
  }
  return s;
}

absl::Status ChorusServer::Impl::AdmitChecked(const std::string& owner, GenerateInput in,
                                              std::shared_ptr<ResultSink> sink) {
  if (draining) return absl::UnavailableError("server is draining; retry on another replica");
  const pb::TenantLimits* tenant = nullptr;
  if (auto it = tenants.find(owner); it != tenants.end()) {
    tenant = &it->second;
    CHORUS_RETURN_IF_ERROR(ApplyTenantLimits(*tenant, admission->limits().default_max_tokens, &in));
  }
  const int64_t agents = std::clamp<int64_t>(in.max_agents > 0 ? in.min_agents : in.agents, 1,
                                             admission->limits().max_agents_per_request);
  CHORUS_RETURN_IF_ERROR(runtime->CheckCapacity(static_cast<int>(agents)));
  AdmissionGate::Ticket ticket = gate->TryEnter();
  if (!ticket) return gate->BusyError();
  const std::string id = in.request_id;
  try {
    auto params = admission->Validate(in, clock.NowMs());
    if (!params.ok()) return params.status();
    params->owner = owner;
    if (tenant != nullptr && tenant->has_max_inflight_agents()) {
      params->owner_max_inflight_agents = tenant->max_inflight_agents();
    }
    return runtime->Submit(std::move(*params), std::move(sink));
  } catch (const std::exception& e) {  // e.g. std::bad_alloc: this request fails, not the server
    ModuleLogger("server")->error("[{}] admission threw: {}", LogSafe(id), e.what());
    return absl::ResourceExhaustedError(
        StrCat("request '", LogSafe(id), "' could not be admitted; see the server log"));
  }
}

std::string ChorusServer::Impl::ModelId() const {
  auto name = model->file().GetString("general.name");
  return ModelDisplayName(name.ok() ? *name : std::string_view(), config.model_path());
}

grpc::ServerUnaryReactor* ChorusServer::Impl::Generate(grpc::CallbackServerContext* ctx,
                                                       const pb::GenerateRequest* req,
                                                       pb::GenerateResponse* resp) {
  auto* reactor = new GenerateReactor();
  reactor->sink = std::make_shared<UnarySink>(reactor, resp, req->reasoning().return_drafts());
  const std::string id = req->request_id().empty() ? NewRequestId() : req->request_id();
  absl::Status s = Admit(ctx, req, false, reactor->sink, id);
  if (!s.ok()) {
    ModuleLogger("server")->info("[{}] rejected: {}", LogSafe(id), LogSafe(s.ToString(), 1024));
    reactor->Finish(ToGrpc(s));
  }
  return reactor;
}

grpc::ServerWriteReactor<pb::GenerateEvent>* ChorusServer::Impl::GenerateStream(
    grpc::CallbackServerContext* ctx, const pb::GenerateRequest* req) {
  const std::string id = req->request_id().empty() ? NewRequestId() : req->request_id();
  auto* reactor = new StreamReactor(id, config.stream_backlog_max_bytes());
  reactor->sink = std::make_shared<StreamReactor::Sink>(reactor, req->reasoning().return_drafts());
  absl::Status s = Admit(ctx, req, true, reactor->sink, id);
  if (!s.ok()) {
    ModuleLogger("server")->info("[{}] rejected: {}", LogSafe(id), LogSafe(s.ToString(), 1024));
    reactor->FinishNow(ToGrpc(s));
  }
  return reactor;
}

grpc::ServerUnaryReactor* ChorusServer::Impl::ListModels(grpc::CallbackServerContext* ctx,
                                                         const pb::ListModelsRequest*,
                                                         pb::ListModelsResponse* resp) {
  if (auto a = Authorize(ctx); !a.ok()) return Reject(ctx, a.status());
  auto* m = resp->add_models();
  const auto& cfg = model->config();
  m->set_name(ModelId());
  m->set_architecture(cfg.arch);
  m->set_context_length(cfg.context_length);
  m->set_vocab_size(cfg.vocab_size);
  m->set_backend(tp_backends.empty() ? std::string(backend->name())
                                     : StrCat(tp_backends[0]->name(), " x", tp_backends.size()));
  return FinishOk(ctx);
}

grpc::ServerUnaryReactor* ChorusServer::Impl::GetStats(grpc::CallbackServerContext* ctx,
                                                       const pb::GetStatsRequest*,
                                                       pb::GetStatsResponse* resp) {
  if (auto a = Authorize(ctx); !a.ok()) return Reject(ctx, a.status());
  const RuntimeStats s = runtime->Stats();
  resp->set_running_requests(s.running_requests);
  resp->set_waiting_requests(s.waiting_requests);
  resp->set_running_agents(s.running_agents);
  resp->set_waiting_agents(s.waiting_agents);
  resp->set_kv_blocks_total(s.kv_blocks_total);
  resp->set_kv_blocks_used(s.kv_blocks_used);
  resp->set_prefix_cache_blocks(s.prefix_cache_blocks);
  resp->set_steps_run(s.steps_run);
  resp->set_requests_completed(s.requests_completed);
  resp->set_requests_cancelled(s.requests_cancelled);
  resp->set_requests_failed(s.requests_failed);
  resp->set_preemptions(s.preemptions);
  resp->set_tokens_generated(s.tokens_generated);
  resp->set_prompt_tokens_computed(s.prompt_tokens_computed);
  resp->set_prompt_tokens_cached(s.prompt_tokens_cached);
  return FinishOk(ctx);
}

grpc::ServerUnaryReactor* ChorusServer::Impl::Abort(grpc::CallbackServerContext* ctx,
                                                    const pb::AbortRequest* req,
                                                    pb::AbortResponse* resp) {
  auto owner = Authorize(ctx);
  if (!owner.ok()) return Reject(ctx, owner.status());
  resp->set_found(runtime->Abort(*owner, req->request_id()));
  return FinishOk(ctx);
}

}  // namespace chorus
