// Result sinks for the gRPC callback reactors (internal to server/): the unary sink fills the
// response and finishes the call once; the stream reactor writes one event at a time (its
// backlog bounded in bytes) and finishes after the last. Client cancels set the sink's flag,
// which the engine thread polls.
#pragma once

#include <grpcpp/grpcpp.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <deque>
#include <memory>

#include "chorus/core/log.h"
#include "chorus/core/log_safe.h"
#include "chorus/core/mutex.h"
#include "chorus/core/request.h"
#include "chorus/core/str_cat.h"
#include "chorus/v1/chorus.grpc.pb.h"
#include "convert.h"

namespace chorus::server {

namespace pb = ::chorus::v1;

// Unary sink: fills the response and finishes the call once.
class UnarySink : public ResultSink {
 public:
  UnarySink(grpc::ServerUnaryReactor* reactor, pb::GenerateResponse* response, bool drafts)
      : reactor_(reactor), response_(response), drafts_(drafts) {}
  void OnDelta(int, std::string_view) override {}
  void OnAgentFinished(const DraftResult&) override {}
  void OnComplete(absl::StatusOr<GenerateResult> r) override {
    if (r.ok()) ToProto(*r, drafts_, response_);
    reactor_->Finish(ToGrpc(r.status()));
  }
  bool Cancelled() const override { return cancelled_.load(); }
  std::atomic<bool> cancelled_{false};

 private:
  grpc::ServerUnaryReactor* reactor_;
  pb::GenerateResponse* response_;
  bool drafts_;
};

class GenerateReactor : public grpc::ServerUnaryReactor {
 public:
  std::shared_ptr<UnarySink> sink;
  void OnCancel() override {
    if (sink) sink->cancelled_ = true;
  }
  void OnDone() override { delete this; }
};

// Streaming: events queue up and are written one at a time; the call finishes after the last.
// The queue's deltas are bounded in bytes (issue 11, finding 1): a client that stops reading while
// its request runs gets its request cancelled (the runtime frees its slot and KV blocks at the next
// step), the queued events dropped, and RESOURCE_EXHAUSTED as the call's status (after the one
// write already handed to gRPC). The agent-finished and final result events are never refused
// nor counted: one per draft and one per request, bounded by the request's own limits.
class StreamReactor : public grpc::ServerWriteReactor<pb::GenerateEvent> {
 public:
  class Sink : public ResultSink {
   public:
    explicit Sink(StreamReactor* r, bool drafts) : r_(r), drafts_(drafts) {}
    void OnDelta(int agent, std::string_view text) override {
      pb::GenerateEvent e;
      e.mutable_delta()->set_agent(agent);
      e.mutable_delta()->set_text(std::string(text));
      r_->Push(std::move(e), /*bounded=*/true);
    }
    // Not counted against the bound, like the result: at most one per draft (the request's own
    // limits bound them), and the drafts of a request often finish in the same step, a burst
    // that could pass the bound while the client reads everything.
    void OnAgentFinished(const DraftResult& d) override {
      pb::GenerateEvent e;
      ToProto(d, e.mutable_agent_finished());
      r_->Push(std::move(e), /*bounded=*/false);
    }
    void OnComplete(absl::StatusOr<GenerateResult> r) override {
      if (r.ok()) {
        pb::GenerateEvent e;
        ToProto(*r, drafts_, e.mutable_result());
        r_->Push(std::move(e), /*bounded=*/false);
      }
      r_->Close(ToGrpc(r.status()));
    }
    bool Cancelled() const override { return cancelled_.load(); }
    std::atomic<bool> cancelled_{false};

   private:
    StreamReactor* r_;
    bool drafts_;
  };

  // `max_backlog_bytes`: serialized bytes of events that may wait for the client.
  StreamReactor(std::string request_id, int64_t max_backlog_bytes)
      : request_id_(std::move(request_id)), max_backlog_bytes_(max_backlog_bytes) {}

  std::shared_ptr<Sink> sink;

  // bounded: the event counts against max_backlog_bytes (deltas, the stream that grows with
  // the request's length); the others only wait in the queue.
  void Push(pb::GenerateEvent e, bool bounded) {
    MutexLock lock(&mu_);
    if (overflowed_ || closing_) return;
    const int64_t bytes = static_cast<int64_t>(e.ByteSizeLong());
    if (bounded && backlog_bytes_ + bytes > max_backlog_bytes_) {
      OverflowLocked();
      return;
    }
    const int64_t counted = bounded ? bytes : 0;
    backlog_bytes_ += counted;
    queue_.push_back({std::move(e), counted});
    MaybeWriteLocked();  // never finishes: closing_ is false here
  }
  void Close(const grpc::Status& s) {
    grpc::Status finish;
    {
      MutexLock lock(&mu_);
      final_ = overflowed_ ? OverflowStatus() : s;
      closing_ = true;
      if (!MaybeWriteLocked(&finish)) return;
    }
    Finish(finish);  // may delete this (OnDone) at once, on any thread
  }
  // Finish right away (the request never reached the runtime).
  void FinishNow(const grpc::Status& s) { Close(s); }

  void OnWriteDone(bool ok) override {
    grpc::Status finish;
    {
      MutexLock lock(&mu_);
      writing_ = false;
      backlog_bytes_ -= queue_.front().bytes;
      queue_.pop_front();
      if (!ok) {  // the client is gone: drop what is left
        queue_.clear();
        backlog_bytes_ = 0;
        if (sink) sink->cancelled_ = true;
      }
      if (!MaybeWriteLocked(&finish)) return;
    }
    Finish(finish);
  }
  void OnCancel() override {
    if (sink) sink->cancelled_ = true;
  }
  void OnDone() override { delete this; }

 private:
  struct Pending {
    pb::GenerateEvent event;
    int64_t bytes = 0;  // counted against the bound: the serialized size, or 0 if not bounded
  };
  // Keeps only the event gRPC is writing; the runtime sees the cancel at its next step and
  // then calls Close, which finishes with OverflowStatus().
  void OverflowLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    overflowed_ = true;
    while (queue_.size() > (writing_ ? 1u : 0u)) {
      backlog_bytes_ -= queue_.back().bytes;
      queue_.pop_back();
    }
    if (sink) sink->cancelled_ = true;
    ModuleLogger("server")->warn(
        "[{}] stream client is not reading: over {} bytes of events waiting "
        "(stream_backlog_max_bytes); request cancelled",
        LogSafe(request_id_), max_backlog_bytes_);
  }
  grpc::Status OverflowStatus() const {
    return grpc::Status(
        grpc::StatusCode::RESOURCE_EXHAUSTED,
        StrCat("stream backlog over stream_backlog_max_bytes ", max_backlog_bytes_,
               ": the client stopped reading; request '", request_id_, "' was cancelled"));
  }
  // Starts the next write, or, once closing with nothing left to write, marks the call
  // finished and returns true with the status to finish with: the caller calls Finish after
  // releasing mu_, because Finish may run OnDone (delete this) at once on a gRPC thread, and
  // the lock's destructor would then unlock a freed mutex (found by ThreadSanitizer).
  bool MaybeWriteLocked(grpc::Status* finish = nullptr) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (writing_ || finished_) return false;
    if (!queue_.empty()) {
      writing_ = true;
      StartWrite(&queue_.front().event);
    } else if (closing_ && finish != nullptr) {
      finished_ = true;
      *finish = final_;
      return true;
    }
    return false;
  }
  const std::string request_id_;
  const int64_t max_backlog_bytes_;
  Mutex mu_;
  std::deque<Pending> queue_ ABSL_GUARDED_BY(mu_);
  // Bounded events' bytes in queue_, the one being written too.
  int64_t backlog_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool closing_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  bool overflowed_ ABSL_GUARDED_BY(mu_) = false;
  grpc::Status final_ ABSL_GUARDED_BY(mu_);
};

}  // namespace chorus::server
