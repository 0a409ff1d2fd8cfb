// Result sinks for the gRPC callback reactors (internal to server/): the unary sink fills the
// response and finishes the call once; the stream reactor writes one event at a time and
// finishes after the last. Client cancels set the sink's flag, which the engine thread polls.
#pragma once

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <deque>
#include <memory>
#include <mutex>

#include "chorus/core/request.h"
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
class StreamReactor : public grpc::ServerWriteReactor<pb::GenerateEvent> {
 public:
  class Sink : public ResultSink {
   public:
    explicit Sink(StreamReactor* r, bool drafts) : r_(r), drafts_(drafts) {}
    void OnDelta(int agent, std::string_view text) override {
      pb::GenerateEvent e;
      e.mutable_delta()->set_agent(agent);
      e.mutable_delta()->set_text(std::string(text));
      r_->Push(std::move(e));
    }
    void OnAgentFinished(const DraftResult& d) override {
      pb::GenerateEvent e;
      ToProto(d, e.mutable_agent_finished());
      r_->Push(std::move(e));
    }
    void OnComplete(absl::StatusOr<GenerateResult> r) override {
      if (r.ok()) {
        pb::GenerateEvent e;
        ToProto(*r, drafts_, e.mutable_result());
        r_->Push(std::move(e));
      }
      r_->Close(ToGrpc(r.status()));
    }
    bool Cancelled() const override { return cancelled_.load(); }
    std::atomic<bool> cancelled_{false};

   private:
    StreamReactor* r_;
    bool drafts_;
  };

  std::shared_ptr<Sink> sink;

  void Push(pb::GenerateEvent e) {
    std::lock_guard<std::mutex> lock(mu_);
    queue_.push_back(std::move(e));
    MaybeWriteLocked();
  }
  void Close(const grpc::Status& s) {
    std::lock_guard<std::mutex> lock(mu_);
    final_ = s;
    closing_ = true;
    MaybeWriteLocked();
  }
  // Finish right away (the request never reached the runtime).
  void FinishNow(const grpc::Status& s) { Close(s); }

  void OnWriteDone(bool ok) override {
    std::lock_guard<std::mutex> lock(mu_);
    writing_ = false;
    queue_.pop_front();
    if (!ok) {  // the client is gone: drop what is left
      queue_.clear();
      if (sink) sink->cancelled_ = true;
    }
    MaybeWriteLocked();
  }
  void OnCancel() override {
    if (sink) sink->cancelled_ = true;
  }
  void OnDone() override { delete this; }

 private:
  void MaybeWriteLocked() {
    if (writing_ || finished_) return;
    if (!queue_.empty()) {
      writing_ = true;
      StartWrite(&queue_.front());
    } else if (closing_) {
      finished_ = true;
      Finish(final_);
    }
  }
  std::mutex mu_;
  std::deque<pb::GenerateEvent> queue_;
  bool writing_ = false, closing_ = false, finished_ = false;
  grpc::Status final_;
};

}  // namespace chorus::server
