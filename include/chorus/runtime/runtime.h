// The runtime: one engine thread that owns the scheduler, the KV bookkeeping and the engine.
// Loop: inbox -> cancellations and deadlines -> Schedule -> Step -> agents update -> merge ->
// sinks. Submit, Abort, Stats and Drain are thread-safe (called from gRPC reactors).
#pragma once

#include <atomic>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "absl/status/status.h"
#include "chorus/agents/agent_group.h"
#include "chorus/agents/budget.h"
#include "chorus/core/clock.h"
#include "chorus/core/observer.h"
#include "chorus/engine/engine.h"
#include "chorus/scheduler/scheduler.h"

namespace chorus {

struct RuntimeOptions {
  int kv_block_size = 16;
  int kv_num_blocks = 4096;
  bool prefix_cache = true;
  SchedulerLimits scheduler;
  int max_queued_requests = 256;
  int max_queued_agents = 2048;
  double merge_reserve_ms = 5;
  // Receives step and request-end events (metrics); may be null. Must outlive the runtime.
  RuntimeObserver* observer = nullptr;
  // Test hook: called on the engine thread before every step (fault injection: stalls).
  std::function<void()> before_step;
};

struct RuntimeStats {
  int running_requests = 0, waiting_requests = 0, running_agents = 0, waiting_agents = 0;
  int kv_blocks_total = 0, kv_blocks_used = 0, prefix_cache_blocks = 0;
  int64_t steps_run = 0, requests_completed = 0, requests_cancelled = 0, requests_failed = 0;
  int64_t preemptions = 0, tokens_generated = 0;
  int64_t prompt_tokens_computed = 0, prompt_tokens_cached = 0;
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
  // Queues a validated request. RESOURCE_EXHAUSTED when the queue is full, UNAVAILABLE while
  // draining, DEADLINE_EXCEEDED when the budget cannot cover the prefill. On error the sink is
  // not called (the caller answers); on OK it is, exactly once.
  absl::Status Submit(GenerateParams params, std::shared_ptr<ResultSink> sink);
  // Cancels a live request by id; false if none.
  bool Abort(const std::string& request_id);
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
  // Predicted wall time of the prefill of `prompt_tokens` tokens (for admission).
  double PredictPrefillMs(int prompt_tokens) const;

 private:
  Runtime(const RuntimeOptions& options, const Model* model,
          std::unique_ptr<ForwardExecutor> executor, const Clock* clock);
  void Loop();
  void Calibrate();
  // SYNTHESIZE: starts the extra pass when the drafts are done and the budget allows it.
  bool MaybeStartSynthesis(RequestGroup* g, double now);
  void TakeInbox();
  void CheckGroups(double now);
  void Complete(RequestGroup* g, absl::StatusOr<GenerateResult> result);
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
  StepTimePredictor predictor_;  // engine thread writes; admission reads under mu_
  std::thread thread_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  // Guarded by mu_.
  bool stop_ = false;
  bool draining_ = false;
  bool cancel_all_ = false;
  std::vector<std::unique_ptr<RequestGroup>> inbox_;
  std::unordered_map<std::string, RequestGroup*> live_;  // id -> group (inbox or engine)
  int queued_requests_ = 0, queued_agents_ = 0;
  uint64_t next_seq_ = 0;
  RuntimeStats stats_;
  double prefill_ms_per_token_ = 0.5;  // copied from the predictor after each step

  std::atomic<double> last_progress_ms_{0};

  // Engine thread only.
  std::vector<std::unique_ptr<RequestGroup>> groups_;
};

}  // namespace chorus
