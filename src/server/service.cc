// chorus.v1.Chorus over the gRPC callback API: ChorusServer::Start builds backends, model,
// executor, runtime, admission and metrics, then serves; handlers validate and submit
// (convert.h maps protos and statuses, reactors.h carries results back).
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <fstream>
#include <sstream>
#include <chrono>
#include <deque>
#include <mutex>
#include <thread>
#include <unordered_map>

#include "chorus/admission/admission.h"
#include "chorus/backends/cpu_backend.h"
#include "chorus/backends/cuda_backend.h"
#include "chorus/core/cpu_count.h"
#include "chorus/core/log_safe.h"
#include "chorus/core/status.h"
#include "chorus/core/str_cat.h"
#include "chorus/http/http_server.h"
#include "chorus/metrics/metrics.h"
#include "chorus/model/tensor_parallel.h"
#include "chorus/runtime/runtime.h"
#include "chorus/server/security.h"
#include "chorus/server/server.h"
#include "chorus/v1/chorus.grpc.pb.h"
#include "convert.h"
#include "grpc_limits.h"
#include "reactors.h"

namespace chorus {

using server::FromProto;
using server::GenerateReactor;
using server::StreamReactor;
using server::ToGrpc;
using server::UnarySink;
namespace pb = ::chorus::v1;

class ChorusServer::Impl final : public pb::Chorus::CallbackService {
 public:
  chorus::v1::ServerConfig config;
  std::unique_ptr<Backend> backend;                 // loads the model (and runs it at TP 1)
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
  std::unordered_map<std::string, pb::TenantLimits> tenants;  // by identity (config `tenants`)

  // The caller's identity ("" when auth is off), or UNAUTHENTICATED unless the call carries
  // one of the configured bearer tokens.
  absl::StatusOr<std::string> Authorize(grpc::CallbackServerContext* ctx) const {
    if (!auth.enabled()) return std::string();
    const auto& md = ctx->client_metadata();
    auto it = md.find("authorization");
    if (it == md.end()) return auth.Identify("");
    return auth.Identify(std::string_view(it->second.data(), it->second.size()));
  }
  std::atomic<bool> draining{false};
  std::thread watchdog;
  std::atomic<bool> stop_watchdog{false};
  bool stalled = false;  // watchdog thread only
  std::atomic<bool> stalled_flag{false};  // `stalled`, for the HTTP /health

  // Health reflects engine progress, not an open port: with requests in flight and no loop
  // iteration for engine_stall_timeout_ms, report NOT_SERVING until it moves again.
  void StartWatchdog() {
    watchdog = std::thread([this] {
      while (!stop_watchdog) {
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
        const bool now_stalled = runtime->InFlight() > 0 &&
                                 clock.NowMs() - runtime->LastProgressMs() > config.engine_stall_timeout_ms();
        if (now_stalled != stalled && !draining) {
          stalled = now_stalled;
          stalled_flag = now_stalled;
          server->GetHealthCheckService()->SetServingStatus(!stalled);
          if (stalled) {
            spdlog::error("chorusd: engine loop stalled for more than {} ms; health NOT_SERVING",
                          config.engine_stall_timeout_ms());
          } else {
            spdlog::info("chorusd: engine loop moving again; health SERVING");
          }
        }
      }
    });
  }
  void StopWatchdog() {
    stop_watchdog = true;
    if (watchdog.joinable()) watchdog.join();
  }

  std::mutex done_mu;
  std::condition_variable done_cv;
  bool done = false;

  // Validates and submits a gRPC call; returns the error to answer with, or OK when the
  // runtime owns it.
  absl::Status Admit(grpc::CallbackServerContext* ctx, const pb::GenerateRequest* req, bool stream,
                     std::shared_ptr<ResultSink> sink, const std::string& id) {
    if (draining) return absl::UnavailableError("server is draining; retry on another replica");
    absl::StatusOr<std::string> owner = Authorize(ctx);
    if (!owner.ok()) return owner.status();
    GenerateInput in = FromProto(*req);
    in.stream = stream;
    in.request_id = id;
    const auto deadline = ctx->deadline();
    if (deadline != std::chrono::system_clock::time_point::max()) {
      const double left = std::chrono::duration<double, std::milli>(deadline - std::chrono::system_clock::now()).count();
      in.rpc_deadline_ms = clock.NowMs() + left;
    }
    return AdmitInput(*owner, std::move(in), std::move(sink));
  }

  // Both APIs (gRPC above, HTTP through its hooks): cheap checks (draining, queue limits, the
  // admission slots) before anything that tokenizes, then validation and submit.
  absl::Status AdmitInput(const std::string& owner, GenerateInput in, std::shared_ptr<ResultSink> sink) {
    absl::Status s = AdmitChecked(owner, std::move(in), std::move(sink));
    if (!s.ok() && metrics) {
      std::string reason = absl::StatusCodeToString(s.code());
      for (char& c : reason) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      metrics->OnRejected(owner, reason);
    }
    return s;
  }

  // A tenant's limits on one request (issue 11, finding 5): INVALID_ARGUMENT naming the field,
  // the tenant and the limit; the default prefix-cache salt is the tenant's own.
  static absl::Status ApplyTenantLimits(const pb::TenantLimits& t, int64_t default_max_tokens, GenerateInput* in) {
    if (t.has_max_priority() && in->priority > t.max_priority()) {
      return absl::InvalidArgumentError(StrCat("priority: tenant '", t.name(), "' may ask for at most ",
                                               t.max_priority(), " (tenants.max_priority), got ", in->priority));
    }
    const bool elastic = in->max_agents > 0;
    const int64_t agents = elastic ? in->max_agents : std::max<int64_t>(1, in->agents);
    if (t.has_max_agents_per_request() && agents > t.max_agents_per_request()) {
      return absl::InvalidArgumentError(StrCat(elastic ? "reasoning.max_agents" : "reasoning.agents", ": tenant '",
                                               t.name(), "' may run at most ", t.max_agents_per_request(),
                                               " agents per request (tenants.max_agents_per_request), got ", agents));
    }
    const int64_t max_tokens = in->max_tokens == 0 ? default_max_tokens : in->max_tokens;
    if (t.has_max_tokens_per_request() && max_tokens > t.max_tokens_per_request()) {
      return absl::InvalidArgumentError(StrCat("max_tokens: tenant '", t.name(), "' may ask for at most ",
                                               t.max_tokens_per_request(), " (tenants.max_tokens_per_request), got ",
                                               max_tokens));
    }
    if (!t.shared_prefix_cache() && in->cache_salt.empty()) in->cache_salt = "tenant:" + t.name();
    return absl::OkStatus();
  }

  absl::Status AdmitChecked(const std::string& owner, GenerateInput in, std::shared_ptr<ResultSink> sink) {
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
      spdlog::error("[{}] admission threw: {}", LogSafe(id), e.what());
      return absl::ResourceExhaustedError(StrCat("request '", LogSafe(id),
                                                 "' could not be admitted; see the server log"));
    }
  }

  // The OpenAI-compatible listener (http/), when http_listen_address is set.
  absl::Status StartHttp() {
    http::HttpOptions o;
    o.listen_address = config.http_listen_address();
    o.max_connections = config.http_max_connections();
    o.max_body_bytes = 2 * static_cast<int64_t>(config.max_prompt_bytes()) + (64 << 10);
    o.stream_backlog_max_bytes = config.stream_backlog_max_bytes();
    o.max_agents = config.max_agents_per_request();
    o.model_id = ModelId();
    o.created = std::chrono::duration_cast<std::chrono::seconds>(
                    std::chrono::system_clock::now().time_since_epoch()).count();
    http::HttpHooks h;
    h.authorize = [this](std::string_view authorization) -> absl::StatusOr<std::string> {
      if (!auth.enabled()) return std::string();
      return auth.Identify(authorization);
    };
    h.submit = [this](const std::string& owner, GenerateInput in, std::shared_ptr<ResultSink> sink) {
      return AdmitInput(owner, std::move(in), std::move(sink));
    };
    h.new_request_id = [] { return NewRequestId(); };
    h.serving = [this] { return !draining.load() && !stalled_flag.load(); };
    if (metrics) {
      Metrics* m = metrics.get();
      h.on_response = [m](std::string_view endpoint, int status) { m->OnHttpResponse(endpoint, status); };
    }
    auto server = http::HttpServer::Start(o, std::move(h));
    if (!server.ok()) return server.status();
    http_server = std::move(*server);
    if (!config.tls_cert_path().empty()) {
      spdlog::warn("chorusd: the HTTP API on {} is plain HTTP (TLS is gRPC only): terminate TLS in front of it",
                   config.http_listen_address());
    }
    spdlog::info("chorusd: OpenAI-compatible HTTP API on port {}", http_server->port());
    return absl::OkStatus();
  }

  std::string ModelId() const {
    auto name = model->file().GetString("general.name");
    return ModelDisplayName(name.ok() ? *name : std::string_view(), config.model_path());
  }

  static grpc::ServerUnaryReactor* Reject(grpc::CallbackServerContext* ctx, const absl::Status& s) {
    auto* r = ctx->DefaultReactor();
    r->Finish(ToGrpc(s));
    return r;
  }

  grpc::ServerUnaryReactor* Generate(grpc::CallbackServerContext* ctx, const pb::GenerateRequest* req,
                                     pb::GenerateResponse* resp) override {
    auto* reactor = new GenerateReactor();
    reactor->sink = std::make_shared<UnarySink>(reactor, resp, req->reasoning().return_drafts());
    const std::string id = req->request_id().empty() ? NewRequestId() : req->request_id();
    absl::Status s = Admit(ctx, req, false, reactor->sink, id);
    if (!s.ok()) {
      spdlog::info("[{}] rejected: {}", LogSafe(id), LogSafe(s.ToString(), 1024));
      reactor->Finish(ToGrpc(s));
    }
    return reactor;
  }

  grpc::ServerWriteReactor<pb::GenerateEvent>* GenerateStream(grpc::CallbackServerContext* ctx,
                                                              const pb::GenerateRequest* req) override {
    const std::string id = req->request_id().empty() ? NewRequestId() : req->request_id();
    auto* reactor = new StreamReactor(id, config.stream_backlog_max_bytes());
    reactor->sink = std::make_shared<StreamReactor::Sink>(reactor, req->reasoning().return_drafts());
    absl::Status s = Admit(ctx, req, true, reactor->sink, id);
    if (!s.ok()) {
      spdlog::info("[{}] rejected: {}", LogSafe(id), LogSafe(s.ToString(), 1024));
      reactor->FinishNow(ToGrpc(s));
    }
    return reactor;
  }

  grpc::ServerUnaryReactor* ListModels(grpc::CallbackServerContext* ctx, const pb::ListModelsRequest*,
                                       pb::ListModelsResponse* resp) override {
    if (auto a = Authorize(ctx); !a.ok()) return Reject(ctx, a.status());
    auto* m = resp->add_models();
    const auto& cfg = model->config();
    m->set_name(ModelId());
    m->set_architecture(cfg.arch);
    m->set_context_length(cfg.context_length);
    m->set_vocab_size(cfg.vocab_size);
    m->set_backend(tp_backends.empty() ? std::string(backend->name())
                                        : StrCat(tp_backends[0]->name(), " x", tp_backends.size()));
    auto* r = ctx->DefaultReactor();
    r->Finish(grpc::Status::OK);
    return r;
  }

  grpc::ServerUnaryReactor* GetStats(grpc::CallbackServerContext* ctx, const pb::GetStatsRequest*,
                                     pb::GetStatsResponse* resp) override {
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
    auto* r = ctx->DefaultReactor();
    r->Finish(grpc::Status::OK);
    return r;
  }

  grpc::ServerUnaryReactor* Abort(grpc::CallbackServerContext* ctx, const pb::AbortRequest* req,
                                  pb::AbortResponse* resp) override {
    auto owner = Authorize(ctx);
    if (!owner.ok()) return Reject(ctx, owner.status());
    resp->set_found(runtime->Abort(*owner, req->request_id()));
    auto* r = ctx->DefaultReactor();
    r->Finish(grpc::Status::OK);
    return r;
  }
};

static absl::StatusOr<std::string> ReadSecretFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(StrCat("config: cannot read ", path));
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

absl::StatusOr<std::unique_ptr<ChorusServer>> ChorusServer::Start(const chorus::v1::ServerConfig& config,
                                                                  std::function<void()> before_step) {
  absl::Status valid = ValidateServerConfig(config);
  if (!valid.ok()) return valid;
  auto impl = std::make_unique<Impl>();
  impl->config = config;
  // 0 = the CPUs this process may use (affinity and the container's cgroup CPU quota).
  const int threads = config.num_threads() > 0 ? config.num_threads() : AvailableCpus();
  const int tp = std::max(1, config.tensor_parallel_size());
  // With tensor parallelism the full model stays in host memory (zero copy); each rank loads
  // its shards into its own backend.
  std::vector<int> devices(config.cuda_devices().begin(), config.cuda_devices().end());
  CudaBackendOptions cuda_options = CudaBackendOptions::FromEnvironment();
  if (config.has_cuda_graphs()) cuda_options.graphs = cuda_options.graphs && config.cuda_graphs();
  if (config.has_cuda_dequant_cache()) {
    cuda_options.dequant_cache = cuda_options.dequant_cache && config.cuda_dequant_cache();
  }
  if (config.has_cuda_kv_cache_f16()) cuda_options.kv_f16 = cuda_options.kv_f16 && config.cuda_kv_cache_f16();
  absl::StatusOr<std::unique_ptr<Backend>> backend = absl::InvalidArgumentError(
      StrCat("config: backend '", config.backend(), "' is not cpu or cuda"));
  if (tp > 1 || config.backend() == "cpu") {
    backend = CreateCpuBackend(tp > 1 ? 1 : threads, tp == 1 && config.cpu_int8_activations());
  } else if (config.backend() == "cuda") {
    backend = CreateCudaBackend(devices.empty() ? 0 : devices[0], cuda_options);
  }
  if (!backend.ok()) return backend.status();
  impl->backend = std::move(*backend);
  auto model = Model::Load(config.model_path(), impl->backend.get());
  if (!model.ok()) return model.status();
  impl->model = std::move(*model);
  std::unique_ptr<ForwardExecutor> executor;
  if (tp > 1) {
    auto set = CreateTensorParallelBackends(config.backend(), tp, devices, threads, cuda_options);
    if (!set.ok()) return set.status();
    std::vector<Backend*> raw;
    for (auto& b : set->backends) raw.push_back(b.get());
    auto runner = TensorParallelRunner::Create(*impl->model, raw, std::move(set->comms),
                                               config.kv_num_blocks(), config.kv_block_size_tokens());
    if (!runner.ok()) return runner.status();
    impl->tp_backends = std::move(set->backends);
    executor = std::move(*runner);
  } else {
    auto single = CreateSingleDeviceExecutor(impl->model.get(), impl->backend.get(), config.kv_num_blocks(),
                                             config.kv_block_size_tokens());
    if (!single.ok()) return single.status();
    executor = std::move(*single);
  }

  RuntimeOptions ro;
  ro.kv_block_size = config.kv_block_size_tokens();
  ro.kv_num_blocks = config.kv_num_blocks();
  ro.prefix_cache = config.prefix_cache_enabled();
  ro.scheduler.max_num_batched_tokens = config.max_num_batched_tokens();
  ro.scheduler.max_running_agents = config.max_running_agents();
  ro.scheduler.max_admission_bypass = config.max_admission_bypass();
  ro.max_queued_requests = config.max_queued_requests();
  ro.max_queued_agents = config.max_queued_agents();
  ro.max_queue_delay_ms = static_cast<double>(config.max_queue_delay_ms());
  ro.merge_reserve_ms = static_cast<double>(config.merge_reserve_ms());
  ro.before_step = std::move(before_step);
  if (!config.metrics_listen_address().empty()) {
    Impl* raw = impl.get();
    auto metrics = Metrics::Start(config.metrics_listen_address(), [raw] {
      return raw->runtime ? raw->runtime->Stats() : RuntimeStats{};
    });
    if (!metrics.ok()) return metrics.status();
    impl->metrics = std::move(*metrics);
    ro.observer = impl->metrics.get();
    spdlog::info("chorusd: metrics on port {}", impl->metrics->port());
  }
  auto runtime = Runtime::Create(ro, impl->model.get(), std::move(executor), &impl->clock);
  if (!runtime.ok()) return runtime.status();
  impl->runtime = std::move(*runtime);

  AdmissionLimits al;
  al.max_agents_per_request = config.max_agents_per_request();
  al.max_tokens_limit = config.max_tokens_limit();
  al.max_prompt_bytes = config.max_prompt_bytes();
  al.default_max_tokens = config.default_max_tokens();
  al.default_latency_budget_ms = config.default_latency_budget_ms();
  al.max_latency_budget_ms = config.max_latency_budget_ms();
  al.deadline_margin_ms = config.deadline_margin_ms();
  al.kv_block_size = config.kv_block_size_tokens();
  al.kv_num_blocks = config.kv_num_blocks();
  al.chat_template = config.chat_template();
  auto jinja = impl->model->file().GetString("tokenizer.chat_template");
  const ChatTemplate chat = DetectChatTemplate(jinja.ok() ? *jinja : std::string_view(), al.chat_template);
  if (chat == ChatTemplate::kNone && jinja.ok() && !jinja->empty()) {
    // Templates are recognised, never executed: one that is not must be named in the config.
    return absl::FailedPreconditionError(StrCat(
        config.model_path(), ": the model's chat template is not one Chorus recognises (Llama 2, "
        "Llama 3, ChatML, Qwen3); set chat_template (llama2, llama3, chatml, qwen3) in the config"));
  }
  impl->admission = std::make_unique<Admission>(al, &impl->model->tokenizer(),
                                                impl->model->config().context_length, chat, &impl->clock);
  impl->gate = std::make_unique<AdmissionGate>(config.max_concurrent_admissions());
  impl->runtime->Start();

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  server::ApplyConnectionLimits(config, &builder);
  std::shared_ptr<grpc::ServerCredentials> creds = grpc::InsecureServerCredentials();
  if (!config.tls_cert_path().empty()) {
    auto cert = ReadSecretFile(config.tls_cert_path());
    if (!cert.ok()) return cert.status();
    auto key = ReadSecretFile(config.tls_key_path());
    if (!key.ok()) return key.status();
    grpc::SslServerCredentialsOptions ssl;
    ssl.pem_key_cert_pairs.push_back({*key, *cert});
    creds = grpc::SslServerCredentials(ssl);
  }
  if (!config.auth_token_path().empty()) {
    auto tokens = ReadSecretFile(config.auth_token_path());
    if (!tokens.ok()) return tokens.status();
    auto auth = TokenAuth::Parse(*tokens);
    if (!auth.ok()) return auth.status();
    impl->auth = *std::move(auth);
  }
  for (const auto& t : config.tenants()) {
    if (!impl->auth.HasIdentity(t.name())) {
      return absl::InvalidArgumentError(StrCat("config: tenants '", t.name(), "' has no \"", t.name(),
                                               " TOKEN\" line in auth_token_path"));
    }
    impl->tenants[t.name()] = t;
  }
  builder.AddListeningPort(config.listen_address(), creds, &impl->port);
  builder.RegisterService(impl.get());
  impl->server = builder.BuildAndStart();
  if (!impl->server || impl->port == 0) {
    return absl::UnavailableError(StrCat("cannot listen on ", config.listen_address()));
  }
  if (!config.http_listen_address().empty()) {
    absl::Status http_ok = impl->StartHttp();
    if (!http_ok.ok()) return http_ok;
  }
  impl->server->GetHealthCheckService()->SetServingStatus(true);
  if (config.engine_stall_timeout_ms() > 0) impl->StartWatchdog();
  spdlog::info("chorusd: serving {} ({}, {} layers, {} backend{}, {} threads) on port {}",
               config.model_path(), impl->model->config().arch, impl->model->config().n_layers,
               impl->tp_backends.empty() ? impl->backend->name() : impl->tp_backends[0]->name(),
               impl->tp_backends.empty() ? std::string() : StrCat(" x", impl->tp_backends.size(), " tensor-parallel"),
               threads, impl->port);
  return std::unique_ptr<ChorusServer>(new ChorusServer(std::move(impl)));
}

ChorusServer::ChorusServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

ChorusServer::~ChorusServer() {
  impl_->StopWatchdog();
  if (impl_->http_server) impl_->http_server->StopAccepting();  // no submit runs after this
  if (impl_->server) {
    impl_->server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
  }
  impl_->runtime.reset();  // ends the engine thread; unfinished calls end CANCELLED
  impl_->http_server.reset();  // its handlers have their results now: joins them
}

int ChorusServer::port() const { return impl_->port; }
int ChorusServer::metrics_port() const { return impl_->metrics ? impl_->metrics->port() : 0; }
int ChorusServer::http_port() const { return impl_->http_server ? impl_->http_server->port() : 0; }

void ChorusServer::Drain() {
  Impl& s = *impl_;
  s.draining = true;
  s.StopWatchdog();
  s.server->GetHealthCheckService()->SetServingStatus(false);
  s.runtime->BeginDrain();
  spdlog::info("chorusd: draining {} in-flight requests (up to {} ms)", s.runtime->InFlight(),
               s.config.drain_timeout_ms());
  const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(s.config.drain_timeout_ms());
  while (!s.runtime->Idle() && std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  if (!s.runtime->Idle()) {
    spdlog::warn("chorusd: drain timeout; cancelling {} requests", s.runtime->InFlight());
    s.runtime->CancelAll();
    for (int i = 0; i < 200 && !s.runtime->Idle(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  if (s.http_server) s.http_server->StopAccepting();
  s.server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  {
    std::lock_guard<std::mutex> lock(s.done_mu);
    s.done = true;
  }
  s.done_cv.notify_all();
}

void ChorusServer::Wait() {
  std::unique_lock<std::mutex> lock(impl_->done_mu);
  impl_->done_cv.wait(lock, [this] { return impl_->done; });
}

}  // namespace chorus
