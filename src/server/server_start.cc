// ChorusServer::Start: builds the backends, the model, the executor, the runtime, admission and
// metrics from the config, then starts the gRPC listener (TLS, auth tokens, tenants) and the
// optional OpenAI-compatible HTTP listener.
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <functional>
#include <memory>
#include <sstream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "chorus/admission/admission.h"
#include "chorus/backends/cpu_backend.h"
#include "chorus/backends/cuda_backend.h"
#include "chorus/core/cpu_count.h"
#include "chorus/core/log.h"
#include "chorus/core/secret_file.h"
#include "chorus/core/status.h"
#include "chorus/core/str_cat.h"
#include "chorus/http/http_server.h"
#include "chorus/metrics/metrics.h"
#include "chorus/model/executor.h"
#include "chorus/model/tensor_parallel.h"
#include "chorus/runtime/runtime.h"
#include "chorus/server/security.h"
#include "chorus/server/server.h"
#include "grpc_limits.h"
#include "service_impl.h"

namespace chorus {
namespace {

namespace pb = ::chorus::v1;

// The config names the secret files; the messages name the config.
absl::StatusOr<std::string> ReadConfigSecret(const std::string& path) {
  auto data = ReadSecretFile(path);
  if (!data.ok())
    return absl::Status(data.status().code(), StrCat("config: ", data.status().message()));
  return data;
}

// The backend that loads the model: with tensor parallelism a one-thread CPU backend (the full
// model stays in host memory, zero copy; each rank loads its shards into its own backend),
// else the configured one.
absl::StatusOr<std::unique_ptr<Backend>> CreateLoadingBackend(
    const pb::ServerConfig& config, int threads, int tp, const CudaBackendOptions& cuda_options) {
  absl::StatusOr<std::unique_ptr<Backend>> backend = absl::InvalidArgumentError(
      StrCat("config: backend '", config.backend(), "' is not cpu or cuda"));
  if (tp > 1 || config.backend() == "cpu") {
    backend = CreateCpuBackend(tp > 1 ? 1 : threads, tp == 1 && config.cpu_int8_activations());
  } else if (config.backend() == "cuda") {
    backend = CreateCudaBackend(config.cuda_devices_size() == 0 ? 0 : config.cuda_devices(0),
                                cuda_options);
  }
  return backend;
}

// Tensor-parallel ranks over the loaded model (their backends kept in impl->tp_backends), or
// the single device the model was loaded on.
absl::StatusOr<std::unique_ptr<ForwardExecutor>> CreateExecutor(
    const pb::ServerConfig& config, int threads, int tp, const CudaBackendOptions& cuda_options,
    ChorusServer::Impl* impl) {
  if (tp == 1) {
    return CreateSingleDeviceExecutor(impl->model.get(), impl->backend.get(),
                                      config.kv_num_blocks(), config.kv_block_size_tokens());
  }
  const std::vector<int> devices(config.cuda_devices().begin(), config.cuda_devices().end());
  auto set = CreateTensorParallelBackends(config.backend(), tp, devices, threads, cuda_options);
  if (!set.ok()) return set.status();
  std::vector<Backend*> raw;
  for (auto& b : set->backends) raw.push_back(b.get());
  auto runner = TensorParallelRunner::Create(*impl->model, raw, std::move(set->comms),
                                             config.kv_num_blocks(), config.kv_block_size_tokens());
  if (!runner.ok()) return runner.status();
  impl->tp_backends = std::move(set->backends);
  return std::unique_ptr<ForwardExecutor>(std::move(*runner));
}

RuntimeOptions RuntimeOptionsFromConfig(const pb::ServerConfig& config,
                                        std::function<void()> before_step) {
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
  return ro;
}

// The Prometheus listener when metrics_listen_address is set; it observes the runtime.
absl::Status StartMetrics(ChorusServer::Impl* impl, RuntimeOptions* ro) {
  if (impl->config.metrics_listen_address().empty()) return absl::OkStatus();
  ChorusServer::Impl* raw = impl;
  auto metrics = Metrics::Start(impl->config.metrics_listen_address(), [raw] {
    return raw->runtime ? raw->runtime->Stats() : RuntimeStats{};
  });
  if (!metrics.ok()) return metrics.status();
  impl->metrics = std::move(*metrics);
  ro->observer = impl->metrics.get();
  ModuleLogger("server")->info("chorusd: metrics on port {}", impl->metrics->port());
  return absl::OkStatus();
}

AdmissionLimits AdmissionLimitsFromConfig(const pb::ServerConfig& config) {
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
  return al;
}

// Admission with the model's chat template (or the configured fallback), and its gate.
absl::Status CreateAdmission(ChorusServer::Impl* impl) {
  const AdmissionLimits al = AdmissionLimitsFromConfig(impl->config);
  auto jinja = impl->model->file().GetString("tokenizer.chat_template");
  const ChatTemplate chat =
      DetectChatTemplate(jinja.ok() ? *jinja : std::string_view(), al.chat_template);
  if (chat == ChatTemplate::kNone && jinja.ok() && !jinja->empty()) {
    // Templates are recognised, never executed: one that is not must be named in the config.
    return absl::FailedPreconditionError(
        StrCat(impl->config.model_path(),
               ": the model's chat template is not one Chorus recognises (Llama 2, Llama 3, "
               "ChatML, Qwen3); set chat_template (llama2, llama3, chatml, qwen3) in the config"));
  }
  impl->admission = std::make_unique<Admission>(al, &impl->model->tokenizer(),
                                                impl->model->config().context_length, chat);
  impl->gate = std::make_unique<AdmissionGate>(impl->config.max_concurrent_admissions());
  return absl::OkStatus();
}

// TLS from tls_cert_path / tls_key_path, else plaintext.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> ListenerCredentials(
    const pb::ServerConfig& config) {
  if (config.tls_cert_path().empty()) return grpc::InsecureServerCredentials();
  auto cert = ReadConfigSecret(config.tls_cert_path());
  if (!cert.ok()) return cert.status();
  auto key = ReadConfigSecret(config.tls_key_path());
  if (!key.ok()) return key.status();
  grpc::SslServerCredentialsOptions ssl;
  ssl.pem_key_cert_pairs.push_back({*key, *cert});
  return grpc::SslServerCredentials(ssl);
}

// Bearer tokens from auth_token_path, and the tenants' limits by identity (each tenant needs a
// "TENANT TOKEN" line).
absl::Status LoadAuth(ChorusServer::Impl* impl) {
  const pb::ServerConfig& config = impl->config;
  if (!config.auth_token_path().empty()) {
    auto tokens = ReadConfigSecret(config.auth_token_path());
    if (!tokens.ok()) return tokens.status();
    auto auth = TokenAuth::Parse(*tokens);
    if (!auth.ok()) return auth.status();
    impl->auth = *std::move(auth);
  }
  for (const auto& t : config.tenants()) {
    if (!impl->auth.HasIdentity(t.name())) {
      return absl::InvalidArgumentError(StrCat("config: tenants '", t.name(), "' has no \"",
                                               t.name(), " TOKEN\" line in auth_token_path"));
    }
    impl->tenants[t.name()] = t;
  }
  return absl::OkStatus();
}

// chorus.v1.Chorus, grpc.health.v1 and reflection on listen_address.
absl::Status StartGrpc(ChorusServer::Impl* impl) {
  const pb::ServerConfig& config = impl->config;
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  server::ApplyConnectionLimits(config, &builder);
  auto creds = ListenerCredentials(config);
  if (!creds.ok()) return creds.status();
  CHORUS_RETURN_IF_ERROR(LoadAuth(impl));
  builder.AddListeningPort(config.listen_address(), *creds, &impl->port);
  builder.RegisterService(impl);
  impl->server = builder.BuildAndStart();
  if (!impl->server || impl->port == 0) {
    return absl::UnavailableError(StrCat("cannot listen on ", config.listen_address()));
  }
  return absl::OkStatus();
}

void LogServing(const ChorusServer::Impl& impl, int threads) {
  const bool tp = !impl.tp_backends.empty();
  ModuleLogger("server")->info(
      "chorusd: serving {} ({}, {} layers, {} backend{}, {} threads) on port {}",
      impl.config.model_path(), impl.model->config().arch, impl.model->config().n_layers,
      tp ? impl.tp_backends[0]->name() : impl.backend->name(),
      tp ? StrCat(" x", impl.tp_backends.size(), " tensor-parallel") : std::string(), threads,
      impl.port);
}

}  // namespace

absl::StatusOr<std::unique_ptr<ChorusServer>> ChorusServer::Start(
    const chorus::v1::ServerConfig& config, std::function<void()> before_step) {
  absl::Status valid = ValidateServerConfig(config);
  if (!valid.ok()) return valid;
  auto impl = std::make_unique<Impl>();
  impl->config = config;
  // 0 = the CPUs this process may use (affinity and the container's cgroup CPU quota).
  const int threads = config.num_threads() > 0 ? config.num_threads() : AvailableCpus();
  const int tp = std::max(1, config.tensor_parallel_size());
  const CudaBackendOptions cuda_options = CudaBackendOptionsFromConfig(config);
  auto backend = CreateLoadingBackend(config, threads, tp, cuda_options);
  if (!backend.ok()) return backend.status();
  impl->backend = std::move(*backend);
  auto model = Model::Load(config.model_path(), impl->backend.get());
  if (!model.ok()) return model.status();
  impl->model = std::move(*model);
  auto executor = CreateExecutor(config, threads, tp, cuda_options, impl.get());
  if (!executor.ok()) return executor.status();

  RuntimeOptions ro = RuntimeOptionsFromConfig(config, std::move(before_step));
  CHORUS_RETURN_IF_ERROR(StartMetrics(impl.get(), &ro));
  auto runtime = Runtime::Create(ro, impl->model.get(), std::move(*executor), &impl->clock);
  if (!runtime.ok()) return runtime.status();
  impl->runtime = std::move(*runtime);
  CHORUS_RETURN_IF_ERROR(CreateAdmission(impl.get()));
  impl->runtime->Start();

  CHORUS_RETURN_IF_ERROR(StartGrpc(impl.get()));
  if (!config.http_listen_address().empty()) CHORUS_RETURN_IF_ERROR(impl->StartHttp());
  impl->server->GetHealthCheckService()->SetServingStatus(true);
  if (config.engine_stall_timeout_ms() > 0) impl->StartWatchdog();
  LogServing(*impl, threads);
  return std::unique_ptr<ChorusServer>(new ChorusServer(std::move(impl)));
}

absl::Status ChorusServer::Impl::StartHttp() {
  http::HttpOptions o;
  o.listen_address = config.http_listen_address();
  o.max_connections = config.http_max_connections();
  o.max_body_bytes = 2 * static_cast<int64_t>(config.max_prompt_bytes()) + (64 << 10);
  o.stream_backlog_max_bytes = config.stream_backlog_max_bytes();
  o.max_agents = config.max_agents_per_request();
  o.model_id = ModelId();
  o.created = std::chrono::duration_cast<std::chrono::seconds>(
                  std::chrono::system_clock::now().time_since_epoch())
                  .count();
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
    h.on_response = [m](std::string_view endpoint, int status) {
      m->OnHttpResponse(endpoint, status);
    };
  }
  auto started = http::HttpServer::Start(o, std::move(h));
  if (!started.ok()) return started.status();
  http_server = std::move(*started);
  if (!config.tls_cert_path().empty()) {
    ModuleLogger("server")->warn(
        "chorusd: the HTTP API on {} is plain HTTP (TLS is gRPC only): terminate TLS in front "
        "of it",
        config.http_listen_address());
  }
  ModuleLogger("server")->info("chorusd: OpenAI-compatible HTTP API on port {}",
                               http_server->port());
  return absl::OkStatus();
}

}  // namespace chorus
