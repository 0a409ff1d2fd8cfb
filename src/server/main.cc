// chorusd: the Chorus serving daemon.
//
//   chorusd [--config FILE] [--listen HOST:PORT] [--model PATH] [--threads N] [--http HOST:PORT]
// With no arguments it serves the embedded stories260K model on 127.0.0.1:50051.
// SIGTERM / SIGINT drain: health NOT_SERVING, new calls UNAVAILABLE, in-flight requests finish
// until drain_timeout_ms, then exit 0.
#include <signal.h>
#include <spdlog/spdlog.h>

#include <cstdio>
#include <filesystem>
#include <thread>

#include "../tools/flags.h"
#include "chorus/core/log.h"
#include "chorus/server/server.h"

int main(int argc, char** argv) {
  chorus::tools::Flags flags({"config", "listen", "model", "threads", "backend", "metrics", "http"},
                             {"help"});
  std::string error;
  if (!flags.Parse(argc, argv, &error)) {
    std::fprintf(stderr, "chorusd: %s (see --help)\n", error.c_str());
    return 2;
  }
  if (flags.Has("help")) {
    std::puts(
        "usage: chorusd [--config FILE] [--listen HOST:PORT] [--model PATH] [--threads N] "
        "[--backend cpu|cuda]\n"
        "               [--metrics HOST:PORT (\"\" = off)]\n"
        "               [--http HOST:PORT (OpenAI-compatible API; \"\" = off)]");
    return 0;
  }
  chorus::v1::ServerConfig config = chorus::DefaultServerConfig();
  if (flags.Has("config")) {
    auto c = chorus::LoadServerConfig(flags.Get("config"));
    if (!c.ok()) {
      std::fprintf(stderr, "chorusd: %s\n", std::string(c.status().message()).c_str());
      return 2;
    }
    config = *c;
  }
  if (flags.Has("listen")) config.set_listen_address(flags.Get("listen"));
  if (flags.Has("model")) config.set_model_path(flags.Get("model"));
  int threads = 0;
  if (!flags.GetNumber("threads", 0, 0, 1024, &threads, &error)) {
    std::fprintf(stderr, "chorusd: %s\n", error.c_str());
    return 2;
  }
  if (flags.Has("threads")) config.set_num_threads(threads);
  if (flags.Has("backend")) config.set_backend(flags.Get("backend"));
  if (flags.Has("metrics")) config.set_metrics_listen_address(flags.Get("metrics"));
  if (flags.Has("http")) config.set_http_listen_address(flags.Get("http"));
  // The embedded model, when run from outside the source tree.
  if (!flags.Has("model") && !std::filesystem::exists(config.model_path())) {
    const std::string embedded = std::string(CHORUS_SOURCE_DIR) + "/" + config.model_path();
    if (std::filesystem::exists(embedded)) config.set_model_path(embedded);
  }

  // Block the signals in every thread; a dedicated thread waits for them.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);

  auto server = chorus::ChorusServer::Start(config);
  if (!server.ok()) {
    std::fprintf(stderr, "chorusd: %s\n", std::string(server.status().message()).c_str());
    return 1;
  }
  std::printf("chorusd listening on port %d\n", (*server)->port());
  if ((*server)->http_port() > 0) {
    std::printf("chorusd HTTP (OpenAI API) on port %d\n", (*server)->http_port());
  }
  std::fflush(stdout);
  std::thread signals([&] {
    int sig = 0;
    sigwait(&set, &sig);
    chorus::ModuleLogger("server")->info("chorusd: signal {}, draining", sig);
    (*server)->Drain();
  });
  (*server)->Wait();
  signals.join();
  chorus::ModuleLogger("server")->info("chorusd: stopped");
  return 0;
}
