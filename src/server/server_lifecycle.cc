// A running ChorusServer: the health watchdog, ports, drain (SIGTERM) and shutdown.
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <memory>
#include <thread>
#include <utility>

#include "chorus/core/log.h"
#include "chorus/server/server.h"
#include "service_impl.h"

namespace chorus {

void ChorusServer::Impl::StartWatchdog() {
  watchdog = std::thread([this] {
    while (!stop_watchdog) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      const bool now_stalled =
          runtime->InFlight() > 0 &&
          clock.NowMs() - runtime->LastProgressMs() > config.engine_stall_timeout_ms();
      if (now_stalled != stalled && !draining) {
        stalled = now_stalled;
        stalled_flag = now_stalled;
        server->GetHealthCheckService()->SetServingStatus(!stalled);
        if (stalled) {
          ModuleLogger("server")->error(
              "chorusd: engine loop stalled for more than {} ms; health NOT_SERVING",
              config.engine_stall_timeout_ms());
        } else {
          ModuleLogger("server")->info("chorusd: engine loop moving again; health SERVING");
        }
      }
    }
  });
}

void ChorusServer::Impl::StopWatchdog() {
  stop_watchdog = true;
  if (watchdog.joinable()) watchdog.join();
}

ChorusServer::ChorusServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

ChorusServer::~ChorusServer() {
  impl_->StopWatchdog();
  if (impl_->http_server) impl_->http_server->StopAccepting();  // no submit runs after this
  if (impl_->server) {
    impl_->server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
  }
  impl_->runtime.reset();      // ends the engine thread; unfinished calls end CANCELLED
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
  ModuleLogger("server")->info("chorusd: draining {} in-flight requests (up to {} ms)",
                               s.runtime->InFlight(), s.config.drain_timeout_ms());
  const auto until =
      std::chrono::steady_clock::now() + std::chrono::milliseconds(s.config.drain_timeout_ms());
  while (!s.runtime->Idle() && std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  if (!s.runtime->Idle()) {
    ModuleLogger("server")->warn("chorusd: drain timeout; cancelling {} requests",
                                 s.runtime->InFlight());
    s.runtime->CancelAll();
    for (int i = 0; i < 200 && !s.runtime->Idle(); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }
  if (s.http_server) s.http_server->StopAccepting();
  s.server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  {
    MutexLock lock(&s.done_mu);
    s.done = true;
  }
  s.done_cv.NotifyAll();
}

void ChorusServer::Wait() {
  MutexLock lock(&impl_->done_mu);
  while (!impl_->done) impl_->done_cv.Wait(&impl_->done_mu);
}

}  // namespace chorus
