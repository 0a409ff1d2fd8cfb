// ChorusServer: the gRPC front end (chorus.v1.Chorus, grpc.health.v1, reflection) over a
// Runtime. The only module that knows gRPC (with client/). Reactors never block: requests
// are validated and tokenized on the reactor, then handed to the runtime's inbox; results
// come back through per-request sinks. Thread-safe.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "chorus/v1/config.pb.h"

namespace chorus {

struct CudaBackendOptions;  // chorus/backends/cuda_backend.h

class ChorusServer {
 public:
  // Loads the model, starts the engine thread and listens. Errors name the file or address.
  // `before_step` is a test hook run on the engine thread before every step (fault injection).
  static absl::StatusOr<std::unique_ptr<ChorusServer>> Start(
      const chorus::v1::ServerConfig& config, std::function<void()> before_step = nullptr);
  ~ChorusServer();

  // The bound port (useful with a :0 listen address).
  int port() const;
  // The metrics port (0 when metrics are off).
  int metrics_port() const;
  // The OpenAI-compatible HTTP port (0 when http_listen_address is empty).
  int http_port() const;
  // SIGTERM: health NOT_SERVING, new calls UNAVAILABLE, in-flight requests finish until
  // drain_timeout_ms, then the rest are cancelled; returns when the server has shut down.
  void Drain();
  // Blocks until Drain() completed (or forever).
  void Wait();

  class Impl;

 private:
  explicit ChorusServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// The built-in default configuration: the one source of the defaults. configs/default.pbtxt
// spells out the same values (tests/server/config_test.cc checks that they agree).
chorus::v1::ServerConfig DefaultServerConfig();
// Default config overlaid with a text-format file. Errors name the file and the problem.
absl::StatusOr<chorus::v1::ServerConfig> LoadServerConfig(const std::string& path);
absl::Status ValidateServerConfig(const chorus::v1::ServerConfig& config);
// The CUDA backend's options under `config`: each switch (cuda_graphs, cuda_kv_cache_f16,
// cuda_dequant_cache, cuda_fuse) is on unless the config turns it off or its environment
// override does (CHORUS_CUDA_GRAPHS, CHORUS_CUDA_KV_F16, CHORUS_CUDA_DEQUANT_CACHE,
// CHORUS_CUDA_FUSE set to 0 or off; for benchmarks). Unset switches count as on.
CudaBackendOptions CudaBackendOptionsFromConfig(const chorus::v1::ServerConfig& config);

}  // namespace chorus
