// The runtime: one engine thread that owns the scheduler, the KV bookkeeping and the engine.
// Loop: inbox -> cancellations and deadlines -> Schedule -> Step -> agents update -> merge ->
// sinks. Submit, Abort, Stats and Drain are thread-safe (called from gRPC reactors).
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "chorus/agents/agent_group.h"
#include "chorus/agents/budget.h"
#include "chorus/core/clock.h"
#include "chorus/core/mutex.h"
#include "chorus/core/observer.h"
#include "chorus/core/stats.h"
#include "chorus/engine/engine.h"
#include "chorus/runtime/latency_model.h"
#include "chorus/scheduler/scheduler.h"

namespace chorus {

struct RuntimeOptions {
  int kv_block_size = 16;
  int kv_num_blocks = 4096;
  bool prefix_cache = true;
  SchedulerLimits scheduler;
  int max_queued_requests = 256;
  int max_queued_agents = 2048;
  double max_queue_delay_ms = 0;  // 0 = off; see ServerConfig.max_queue_delay_ms
  double merge_reserve_ms = 5;
  // Receives step and request-end events (metrics); may be null. Must outlive the runtime.
  RuntimeObserver* observer = nullptr;
  // Test hook: called on the engine thread before every step (fault injection: stalls).
  std::function<void()> before_step;
};

class Runtime {
 public:
  // Runs on `executor` (whose KV cache has options.kv_num_blocks blocks). `model` and `clock`
  // must outlive the runtime (tests pass a fake clock).
  static absl::StatusOr<std::unique_ptr<Runtime>> Create(const RuntimeOptions& options,
                                                         const Model* model,
                                                         std::unique_ptr<ForwardExecutor> executor,
                                                         const Clock* clock);
  // Convenience: a single-device executor on `backend`.
  static absl::StatusOr<std::unique_ptr<Runtime>> Create(const RuntimeOptions& options,
                                                         const Model* model, Backend* backend,
                                                         const Clock* clock);
  ~Runtime();  // stops the thread; unfinished requests end CANCELLED

  // Calibrates the step-time predictor with a few timed forward passes, then starts the
  // engine thread.
  void Start();
  // The cheap checks of Submit (draining, queue limits) for a request of `agents` agents, so
  // that admission refuses before it tokenizes anything. Submit checks again.
  absl::Status CheckCapacity(int agents) const;
  // Queues a validated request. RESOURCE_EXHAUSTED when the queue is full, UNAVAILABLE while
  // draining, DEADLINE_EXCEEDED when the budget cannot cover the prefill, ALREADY_EXISTS when
  // the owner has a live request with that id. On error the sink is not called (the caller
  // answers); on OK it is, exactly once.
  absl::Status Submit(GenerateParams params, std::shared_ptr<ResultSink> sink);
  // Cancels the live request `request_id` of `owner`; false if the owner has none by that id
  // (another owner's requests are never found).
  bool Abort(const std::string& owner, const std::string& request_id);
  RuntimeStats Stats() const;
  // Refuse new requests from now on.
  void BeginDrain();
  // Cancel everything in flight (drain deadline reached).
  void CancelAll();
  bool Idle() const;
  // Requests admitted and not yet finished (for tests and the drain).
  int InFlight() const;
  const Model& model() const { return *model_; }
  // When the engine loop last went round (clock ms): the health watchdog's heartbeat.
  double LastProgressMs() const { return last_progress_ms_.load(); }

 private:
  Runtime(const RuntimeOptions& options, const Model* model,
          std::unique_ptr<ForwardExecutor> executor, const Clock* clock);
  void Loop();
  // One loop iteration; false when there was nothing to run.
  bool RunOnce(StepPlan& plan, StepOutput& out);
  void RunStep(const StepPlan& plan, StepOutput& out);
  void NoteAdmitted();
  void Calibrate();
  // Ends `g` with `error`'s code and a generic message naming the request; the error's own
  // text (backend or exception detail) goes to the log only, never to the client.
  void Fail(RequestGroup* g, const absl::Status& error);
  // SYNTHESIZE: starts the extra pass when the drafts are done and the budget allows it.
  bool MaybeStartSynthesis(RequestGroup* g, double now);
  void TakeInbox();
  void CheckGroups(double now);
  void CheckGroup(RequestGroup* g, double now, double next_step_ms);
  // Every exit path: frees the group's blocks and calls its sink once. `log_detail`, when
  // set, is logged instead of the result's status (what the client must not see).
  void Complete(RequestGroup* g, absl::StatusOr<GenerateResult> result,
                std::string_view log_detail = {});
  absl::Status CapacityLocked(int agents) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Elastic agents: sets params.reasoning.agents from the budget and the live load.
  void ChooseElasticAgentsLocked(GenerateParams& params, double now)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ApplyStep(const StepPlan& plan, const StepOutput& out);
  void PublishStats();

  const RuntimeOptions options_;
  const Model* model_;
  const Clock* clock_;
  std::unique_ptr<ForwardExecutor> executor_;
  BlockManager blocks_;
  Scheduler scheduler_;
  Engine engine_;
  AgentContext ctx_;
  LatencyModel latency_;  // its own lock: the engine thread observes, Submit predicts
  std::thread thread_;

  mutable Mutex mu_;
  CondVar cv_;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  bool draining_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::unique_ptr<RequestGroup>> inbox_ ABSL_GUARDED_BY(mu_);
  // LiveKey(owner, id) -> group (inbox or engine).
  std::unordered_map<std::string, RequestGroup*> live_ ABSL_GUARDED_BY(mu_);
  // Agents queued or running per owner with a tenant in-flight limit.
  std::unordered_map<std::string, int> owner_agents_ ABSL_GUARDED_BY(mu_);
  int queued_requests_ ABSL_GUARDED_BY(mu_) = 0;
  int queued_agents_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t next_seq_ ABSL_GUARDED_BY(mu_) = 0;
  RuntimeStats stats_ ABSL_GUARDED_BY(mu_);

  std::atomic<double> last_progress_ms_{0};

  // Engine thread only.
  std::vector<std::unique_ptr<RequestGroup>> groups_;
  double last_step_ms_ = -1;  // the forward step of the current iteration (-1: none)
};

}  // namespace chorus
