#include "chorus/http/http_server.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <httplib.h>
#include <netinet/in.h>
#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>

#include <chrono>
#include <cstdlib>
#include <deque>
#include <thread>

#include "chorus/core/host_port.h"
#include "chorus/core/log.h"
#include "chorus/core/log_safe.h"
#include "chorus/core/mutex.h"
#include "chorus/core/str_cat.h"
#include "chorus/http/openai.h"

namespace chorus::http {
namespace {

using Clock = std::chrono::steady_clock;

// Where a handler's results arrive: the engine thread pushes, the handler's thread waits.
// Streamed requests keep the deltas (bounded in bytes: past the limit the request is
// cancelled), unary requests only the result.
class HttpSink : public ResultSink {
 public:
  struct Event {
    enum Kind { kDelta, kFinished } kind = kDelta;
    int agent = 0;
    std::string text;
    DraftResult draft;
  };

  HttpSink(bool stream, int64_t max_backlog_bytes)
      : stream_(stream), max_backlog_(max_backlog_bytes) {}

  void OnDelta(int agent, std::string_view text) override {
    if (!stream_) return;
    Push(Event{Event::kDelta, agent, std::string(text), {}}, static_cast<int64_t>(text.size()));
  }
  void OnAgentFinished(const DraftResult& d) override {
    if (!stream_) return;
    Push(Event{Event::kFinished, d.agent, {}, d}, 64);
  }
  void OnComplete(absl::StatusOr<GenerateResult> r) override {
    MutexLock lock(&mu_);
    result_ = std::move(r);
    complete_ = true;
    cv_.NotifyAll();
  }
  bool Cancelled() const override { return cancelled_.load(); }
  void Cancel() { cancelled_ = true; }

  // Waits until an event or the result is there, or `timeout`; true when there is something.
  bool Wait(std::chrono::milliseconds timeout) {
    MutexLock lock(&mu_);
    const auto until = Clock::now() + timeout;
    while (!complete_ && events_.empty()) {
      const auto left = std::chrono::ceil<std::chrono::milliseconds>(until - Clock::now());
      if (left.count() <= 0) break;
      cv_.WaitFor(&mu_, left);
    }
    return complete_ || !events_.empty();
  }
  // Takes the queued events; `complete` (and `result`) when the request has ended.
  std::deque<Event> Take(bool* complete, absl::StatusOr<GenerateResult>* result) {
    MutexLock lock(&mu_);
    std::deque<Event> out;
    out.swap(events_);
    backlog_ = 0;
    *complete = complete_;
    if (complete_) *result = result_;
    return out;
  }
  bool overflowed() const { return overflowed_.load(); }

 private:
  void Push(Event e, int64_t bytes) {
    MutexLock lock(&mu_);
    if (overflowed_) return;
    if (backlog_ + bytes > max_backlog_) {
      overflowed_ = true;
      cancelled_ = true;
      events_.clear();
      return;
    }
    backlog_ += bytes;
    events_.push_back(std::move(e));
    cv_.NotifyAll();
  }
  const bool stream_;
  const int64_t max_backlog_;
  std::atomic<bool> cancelled_{false}, overflowed_{false};
  Mutex mu_;
  CondVar cv_;
  std::deque<Event> events_ ABSL_GUARDED_BY(mu_);
  int64_t backlog_ ABSL_GUARDED_BY(mu_) = 0;
  bool complete_ ABSL_GUARDED_BY(mu_) = false;
  absl::StatusOr<GenerateResult> result_ ABSL_GUARDED_BY(mu_) = absl::UnknownError("no result");
};

// The socket of the connection a handler serves. cpp-httplib hands handlers no socket, so it
// is found once by its addresses among the process's descriptors (the connection stays open
// while its handler runs, so the descriptor cannot be reused under us). Then Closed() polls it
// for the peer's FIN/RST: a client that hung up while its unary request ran cancels it.
class ConnectionWatch {
 public:
  explicit ConnectionWatch(const httplib::Request& req) {
    DIR* dir = opendir("/proc/self/fd");
    if (dir == nullptr) return;
    while (dirent* e = readdir(dir)) {
      char* end = nullptr;
      const long fd = std::strtol(e->d_name, &end, 10);
      if (end == e->d_name || *end != '\0') continue;
      if (Port(static_cast<int>(fd), /*peer=*/false, nullptr) != req.local_port) continue;
      std::string peer_addr;
      if (Port(static_cast<int>(fd), /*peer=*/true, &peer_addr) != req.remote_port ||
          peer_addr != req.remote_addr)
        continue;
      fd_ = static_cast<int>(fd);
      break;
    }
    closedir(dir);
  }
  bool Closed() const {
    if (fd_ < 0) return false;
    pollfd p{fd_, POLLRDHUP, 0};
    return poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR)) != 0;
  }

 private:
  static int Port(int fd, bool peer, std::string* addr) {
    sockaddr_storage ss{};
    socklen_t len = sizeof(ss);
    auto* sa = reinterpret_cast<sockaddr*>(&ss);
    if ((peer ? getpeername(fd, sa, &len) : getsockname(fd, sa, &len)) != 0) return -1;
    char buf[INET6_ADDRSTRLEN] = {0};
    int port = -1;
    if (ss.ss_family == AF_INET) {
      auto* in = reinterpret_cast<sockaddr_in*>(&ss);
      port = ntohs(in->sin_port);
      if (addr) inet_ntop(AF_INET, &in->sin_addr, buf, sizeof(buf));
    } else if (ss.ss_family == AF_INET6) {
      auto* in6 = reinterpret_cast<sockaddr_in6*>(&ss);
      port = ntohs(in6->sin6_port);
      if (addr) inet_ntop(AF_INET6, &in6->sin6_addr, buf, sizeof(buf));
    }
    if (addr) *addr = buf;
    return port;
  }
  int fd_ = -1;
};

int64_t UnixSeconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// Until the first event (unary: the result), watches the connection: a client that hung up
// cancels its request. The runtime completes every submitted request, so this ends.
std::deque<HttpSink::Event> WaitForFirst(HttpSink* sink, const ConnectionWatch& watch,
                                         const std::string& id, bool* complete,
                                         absl::StatusOr<GenerateResult>* result) {
  std::deque<HttpSink::Event> first;
  while (true) {
    if (sink->Wait(std::chrono::milliseconds(100))) {
      first = sink->Take(complete, result);
      if (*complete || !first.empty()) break;
    }
    if (!sink->Cancelled() && watch.Closed()) {
      ModuleLogger("http")->info("[{}] http: client closed the connection; cancelling",
                                 LogSafe(id));
      sink->Cancel();
    }
  }
  return first;
}

// What a streamed response's content provider keeps between its calls.
struct StreamState {
  std::shared_ptr<HttpSink> sink;
  std::shared_ptr<ConnectionWatch> watch;
  std::shared_ptr<StreamEncoder> encoder;
  std::deque<HttpSink::Event> pending;  // taken from the sink, not yet written
  bool complete = false;
  absl::StatusOr<GenerateResult> result = absl::UnknownError("no result");
  std::string id;
};

// One call of the content provider: the frames of the events that arrived within a second (else
// a keep-alive comment), then the end once the request is complete. False (the request
// cancelled) when the client went away.
bool WriteStream(StreamState* st, httplib::DataSink& out) {
  std::string frames;
  auto encode = [&](std::deque<HttpSink::Event>& events) {
    for (auto& e : events) {
      frames += e.kind == HttpSink::Event::kDelta ? st->encoder->Delta(e.agent, e.text)
                                                  : st->encoder->AgentFinished(e.draft);
    }
    events.clear();
  };
  encode(st->pending);
  if (!st->complete) {
    if (st->sink->Wait(std::chrono::milliseconds(1000))) {
      auto events = st->sink->Take(&st->complete, &st->result);
      encode(events);
    } else if (st->watch->Closed()) {
      st->sink->Cancel();
    } else {
      frames += ": keep-alive\n\n";  // an SSE comment: a dead client fails the write
    }
  }
  if (st->complete) {
    if (st->result.ok()) {
      frames += st->encoder->Complete(*st->result);
    } else {
      frames += StreamEncoder::ErrorFrame(ToApiError(st->result.status(), false));
    }
  }
  if (!frames.empty() && !out.write(frames.data(), frames.size())) {
    ModuleLogger("http")->info("[{}] http: stream client went away; cancelling", LogSafe(st->id));
    st->sink->Cancel();
    return false;
  }
  if (st->complete) out.done();
  return true;
}

}  // namespace

class HttpServer::Impl {
 public:
  HttpOptions options;
  HttpHooks hooks;
  httplib::Server http;
  std::thread thread;
  int port = 0;
  SharedMutex gate;  // shared: a submit in progress; exclusive: StopAccepting
  bool stopping ABSL_GUARDED_BY(gate) = false;

  void Reply(httplib::Response& res, std::string_view endpoint, const ApiError& e) {
    res.status = e.http_status;
    if (e.http_status == 401) res.set_header("WWW-Authenticate", "Bearer");
    res.set_content(ErrorJson(e), "application/json");
    if (hooks.on_response) hooks.on_response(endpoint, e.http_status);
  }

  absl::StatusOr<std::string> Authorize(const httplib::Request& req) {
    return hooks.authorize(req.get_header_value("Authorization"));
  }

  void Models(const httplib::Request& req, httplib::Response& res) {
    if (auto owner = Authorize(req); !owner.ok()) {
      return Reply(res, "models", ToApiError(owner.status(), false));
    }
    if (req.matches.size() > 1) {
      if (req.matches[1] != options.model_id) {
        return Reply(
            res, "models",
            ToApiError(absl::NotFoundError(StrCat("model '", LogSafe(req.matches[1].str(), 256),
                                                  "' does not exist")),
                       false));
      }
      res.set_content(ModelJson(options.model_id, options.created), "application/json");
    } else {
      res.set_content(ModelListJson(options.model_id, options.created), "application/json");
    }
    if (hooks.on_response) hooks.on_response("models", 200);
  }

  // Auth, parsing, the model check and admission: false when it has replied with an error. On
  // true the request runs, *id is its id and *sink gets its results.
  bool Submit(const httplib::Request& req, httplib::Response& res, Endpoint endpoint,
              std::string_view name, OpenAiRequest* oreq, std::string* id,
              std::shared_ptr<HttpSink>* sink) {
    auto owner = Authorize(req);
    if (!owner.ok()) {
      Reply(res, name, ToApiError(owner.status(), false));
      return false;
    }
    ApiError err;
    if (!ParseRequest(req.body, endpoint, options.max_agents, oreq, &err)) {
      Reply(res, name, err);
      return false;
    }
    if (oreq->model != options.model_id) {
      Reply(res, name,
            ToApiError(absl::NotFoundError(StrCat("model '", LogSafe(oreq->model, 256),
                                                  "' does not exist; this server serves '",
                                                  options.model_id, "'")),
                       oreq->merged));
      return false;
    }
    if (oreq->input.request_id.empty()) oreq->input.request_id = hooks.new_request_id();
    *id = oreq->input.request_id;
    *sink = std::make_shared<HttpSink>(oreq->stream, options.stream_backlog_max_bytes);
    ReaderMutexLock lock(&gate);
    absl::Status s = stopping
                         ? absl::UnavailableError("server is draining; retry on another replica")
                         : hooks.submit(*owner, oreq->input,  // a copy: the response reads
                                        *sink);  // input.chat.tools to return tool_calls
    if (!s.ok()) {
      ModuleLogger("http")->info("[{}] http: rejected: {}", LogSafe(*id),
                                 LogSafe(s.ToString(), 1024));
      Reply(res, name, ToApiError(s, oreq->merged));
      return false;
    }
    return true;
  }

  void Generate(const httplib::Request& req, httplib::Response& res, Endpoint endpoint) {
    const std::string_view name = endpoint == Endpoint::kChat ? "chat_completions" : "completions";
    OpenAiRequest oreq;
    StreamState st;
    if (!Submit(req, res, endpoint, name, &oreq, &st.id, &st.sink)) return;
    ResponseMeta meta{StrCat(endpoint == Endpoint::kChat ? "chatcmpl-" : "cmpl-", st.id),
                      options.model_id, UnixSeconds()};
    st.watch = std::make_shared<ConnectionWatch>(req);
    st.pending = WaitForFirst(st.sink.get(), *st.watch, st.id, &st.complete, &st.result);
    if (!oreq.stream || (st.complete && st.pending.empty() && !st.result.ok())) {
      if (!st.result.ok()) return Reply(res, name, ToApiError(st.result.status(), oreq.merged));
      res.set_content(ResponseJson(oreq, meta, *st.result), "application/json");
      if (hooks.on_response) hooks.on_response(name, 200);
      return;
    }
    if (hooks.on_response) hooks.on_response(name, 200);
    res.set_header("Cache-Control", "no-cache");
    st.encoder = std::make_shared<StreamEncoder>(std::move(oreq), meta);
    std::shared_ptr<HttpSink> sink = st.sink;
    res.set_chunked_content_provider(
        "text/event-stream",
        [st = std::move(st)](size_t, httplib::DataSink& out) mutable {
          return WriteStream(&st, out);
        },
        [sink](bool success) {
          if (!success) sink->Cancel();
        });
  }
};

absl::StatusOr<std::unique_ptr<HttpServer>> HttpServer::Start(const HttpOptions& options,
                                                              HttpHooks hooks) {
  auto host_port = SplitHostPort(options.listen_address, "http_listen_address");
  if (!host_port.ok()) return host_port.status();
  const auto& [host, port] = *host_port;
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  impl->hooks = std::move(hooks);
  Impl* raw = impl.get();
  auto& h = impl->http;
  const int workers = std::max(1, options.max_connections);
  h.new_task_queue = [workers] { return new httplib::ThreadPool(static_cast<size_t>(workers)); };
  h.set_payload_max_length(static_cast<size_t>(options.max_body_bytes));
  h.set_keep_alive_timeout(5);
  h.set_read_timeout(30);
  h.set_write_timeout(10);  // a stream client that stops reading fails the write, then cancels
  h.Get("/health", [raw](const httplib::Request&, httplib::Response& res) {
    const bool ok = raw->hooks.serving();
    res.status = ok ? 200 : 503;
    res.set_content(ok ? "SERVING\n" : "NOT_SERVING\n", "text/plain");
  });
  h.Get("/v1/models",
        [raw](const httplib::Request& req, httplib::Response& res) { raw->Models(req, res); });
  h.Get(R"(/v1/models/(.+))",
        [raw](const httplib::Request& req, httplib::Response& res) { raw->Models(req, res); });
  h.Post("/v1/completions", [raw](const httplib::Request& req, httplib::Response& res) {
    raw->Generate(req, res, Endpoint::kCompletions);
  });
  h.Post("/v1/chat/completions", [raw](const httplib::Request& req, httplib::Response& res) {
    raw->Generate(req, res, Endpoint::kChat);
  });
  h.set_exception_handler(
      [raw](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
        std::string what = "unknown exception";
        try {
          if (ep) std::rethrow_exception(ep);
        } catch (const std::exception& e) {
          what = e.what();
        } catch (...) {
        }
        ModuleLogger("http")->error("http: handler threw: {}", LogSafe(what, 512));
        ApiError e{500, "server_error", "", "", "internal error; see the server log"};
        raw->Reply(res, "error", e);
      });
  impl->port = port == 0 ? h.bind_to_any_port(host) : (h.bind_to_port(host, port) ? port : -1);
  if (impl->port <= 0) {
    return absl::UnavailableError(StrCat("http: cannot listen on ", options.listen_address));
  }
  impl->thread = std::thread([raw] { raw->http.listen_after_bind(); });
  return std::unique_ptr<HttpServer>(new HttpServer(std::move(impl)));
}

HttpServer::HttpServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

HttpServer::~HttpServer() {
  StopAccepting();
  if (impl_->thread.joinable()) impl_->thread.join();  // the pool joins its workers first
}

int HttpServer::port() const { return impl_->port; }

void HttpServer::StopAccepting() {
  {
    WriterMutexLock lock(&impl_->gate);
    impl_->stopping = true;
  }
  impl_->http.stop();
}

}  // namespace chorus::http
