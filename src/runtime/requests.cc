// Runtime: the thread-safe entry points (capacity checks, Submit, Abort, Stats, drain) and the
// end of a request's life on the engine thread (cancels, budgets, SYNTHESIZE, Complete, Fail).

#include <algorithm>

#include "chorus/agents/elastic.h"
#include "chorus/core/log.h"
#include "chorus/core/log_safe.h"
#include "chorus/core/status.h"
#include "chorus/core/str_cat.h"
#include "chorus/runtime/group_policy.h"
#include "chorus/runtime/runtime.h"
#include "runtime_internal.h"

namespace chorus {
namespace {
spdlog::logger* Log() {
  static const std::shared_ptr<spdlog::logger> logger = ModuleLogger("runtime");
  return logger.get();
}
}  // namespace

using runtime_internal::DraftTokens;
using runtime_internal::FromException;
using runtime_internal::LiveKey;

absl::Status Runtime::CheckCapacity(int agents) const {
  MutexLock lock(&mu_);
  return CapacityLocked(agents);
}

absl::Status Runtime::CapacityLocked(int agents) const {
  if (draining_ || stop_)
    return absl::UnavailableError("server is draining; retry on another replica");
  if (queued_requests_ + 1 > options_.max_queued_requests) {
    return absl::ResourceExhaustedError(StrCat("queue full: ", queued_requests_,
                                               " requests waiting (max_queued_requests ",
                                               options_.max_queued_requests, ")"));
  }
  if (queued_agents_ + agents > options_.max_queued_agents) {
    return absl::ResourceExhaustedError(StrCat("queue full: ", queued_agents_, " agents waiting + ",
                                               agents, " (max_queued_agents ",
                                               options_.max_queued_agents, ")"));
  }
  return absl::OkStatus();
}

absl::Status Runtime::Submit(GenerateParams params, std::shared_ptr<ResultSink> sink) {
  const double now = clock_->NowMs();
  const std::string key = LiveKey(params);
  MutexLock lock(&mu_);
  if (params.reasoning.max_agents > 0) ChooseElasticAgentsLocked(params, now);
  const int agents = params.reasoning.agents;
  CHORUS_RETURN_IF_ERROR(CapacityLocked(agents));
  if (live_.count(key)) {
    return absl::AlreadyExistsError(
        StrCat("request_id '", params.request_id, "' is already in flight"));
  }
  const double prefill = latency_.PrefillMs(static_cast<int>(params.prompt_tokens.size()));
  if (!PrefillFits(now, params.deadline_ms, prefill, latency_.StepMs(agents),
                   options_.merge_reserve_ms)) {
    return absl::DeadlineExceededError(
        StrCat("latency budget of ", static_cast<int64_t>(params.deadline_ms - params.arrival_ms),
               " ms cannot cover the prefill of ", params.prompt_tokens.size(),
               " prompt tokens (predicted ", static_cast<int64_t>(prefill), " ms)"));
  }
  if (params.owner_max_inflight_agents > 0) {
    int& inflight = owner_agents_[params.owner];
    if (inflight + agents > params.owner_max_inflight_agents) {
      const int now_inflight = inflight;
      if (inflight == 0) owner_agents_.erase(params.owner);
      return absl::ResourceExhaustedError(
          StrCat("tenant '", params.owner, "' has ", now_inflight, " agents queued or running + ",
                 agents, " (tenants.max_inflight_agents ", params.owner_max_inflight_agents, ")"));
    }
    inflight += agents;
  }
  auto g = std::make_unique<RequestGroup>(std::move(params), std::move(sink));
  g->admit_seq = next_seq_++;
  live_[key] = g.get();
  queued_requests_ += 1;
  queued_agents_ += agents;
  inbox_.push_back(std::move(g));
  cv_.NotifyAll();
  return absl::OkStatus();
}

void Runtime::ChooseElasticAgentsLocked(GenerateParams& params, double now) {
  ReasoningParams& r = params.reasoning;
  ElasticRequest req;
  req.min_agents = r.min_agents;
  req.max_agents = r.max_agents;
  req.budget_ms = params.deadline_ms - now;
  req.prefill_ms = latency_.PrefillMs(static_cast<int>(params.prompt_tokens.size()));
  req.max_tokens = latency_.ExpectedDraftTokens(params.max_tokens);
  req.merge_reserve_ms = options_.merge_reserve_ms;
  req.blocks_per_agent =
      (params.max_tokens + options_.kv_block_size - 1) / options_.kv_block_size + 1;
  ElasticLoad load;
  load.running_agents = stats_.running_agents;
  load.queued_agents = queued_agents_;
  load.max_running_agents = options_.scheduler.max_running_agents;
  load.free_kv_blocks = stats_.kv_blocks_total - stats_.kv_blocks_used;
  const double overhead = latency_.IterationOverheadMs();
  const int steps = req.max_tokens;
  r.agents = ChooseAgents(req, load, [this, overhead, steps](int rows) {
    return latency_.StepMs(rows, steps) + overhead;
  });
  if (options_.observer != nullptr) options_.observer->OnElasticChoice(r.agents, r.max_agents);
}

bool Runtime::Abort(const std::string& owner, const std::string& request_id) {
  MutexLock lock(&mu_);
  auto it = live_.find(LiveKey(owner, request_id));
  if (it == live_.end()) return false;
  it->second->cancelled = true;
  cv_.NotifyAll();
  return true;
}

RuntimeStats Runtime::Stats() const {
  MutexLock lock(&mu_);
  return stats_;
}

void Runtime::BeginDrain() {
  MutexLock lock(&mu_);
  draining_ = true;
}

void Runtime::CancelAll() {
  MutexLock lock(&mu_);
  for (auto& [id, g] : live_) g->cancelled = true;
  cv_.NotifyAll();
}

int Runtime::InFlight() const {
  MutexLock lock(&mu_);
  return static_cast<int>(live_.size());
}

bool Runtime::Idle() const { return InFlight() == 0; }

void Runtime::Complete(RequestGroup* g, absl::StatusOr<GenerateResult> result,
                       std::string_view log_detail) {
  const bool ever_admitted = g->first_scheduled_ms >= 0;
  scheduler_.Remove(g);
  bool first = false;
  {
    MutexLock lock(&mu_);
    // Counted once even if a failure path completes a group a second time.
    first = live_.erase(LiveKey(g->params)) > 0;
    if (first) {
      if (g->params.owner_max_inflight_agents > 0) {
        auto it = owner_agents_.find(g->params.owner);
        if (it != owner_agents_.end() && (it->second -= g->params.reasoning.agents) <= 0)
          owner_agents_.erase(it);
      }
      if (!ever_admitted) {  // still counted in the queue limits
        queued_requests_ -= 1;
        queued_agents_ -= g->params.reasoning.agents;
      }
      if (result.ok()) {
        stats_.requests_completed++;
      } else if (result.status().code() == absl::StatusCode::kCancelled) {
        stats_.requests_cancelled++;
      } else {
        stats_.requests_failed++;
      }
    }
  }
  if (first && result.ok()) {
    // How long drafts run: one that ended on its own tells its length; one that was stopped
    // (max_tokens, consensus, low confidence, budget) only that it needed more. LatencyModel
    // has its own lock: outside mu_.
    for (const DraftResult& d : result->drafts) {
      const bool natural = d.finish == FinishReason::kEndOfText || d.finish == FinishReason::kStop;
      latency_.ObserveDraftTokens(d.num_tokens, /*at_least=*/!natural);
    }
  }
  const std::string id = LogSafe(g->params.request_id);
  if (!result.ok() && result.status().code() != absl::StatusCode::kCancelled) {
    Log()->warn("[{}] failed: {}", id,
                log_detail.empty() ? result.status().ToString() : std::string(log_detail));
  } else {
    Log()->debug("[{}] {} after {:.1f} ms", id, result.ok() ? "done" : "cancelled",
                 clock_->NowMs() - g->params.arrival_ms);
  }
  try {
    if (options_.observer != nullptr) {
      const GenerateParams& p = g->params;
      std::string status = "ok";
      if (!result.ok()) {
        status = absl::StatusCodeToString(result.status().code());
        for (char& c : status) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      }
      options_.observer->OnRequestEnd(
          p.owner, status, ever_admitted ? g->first_scheduled_ms - p.arrival_ms : -1,
          g->first_token_ms >= 0 ? g->first_token_ms - p.arrival_ms : -1,
          clock_->NowMs() - p.arrival_ms, static_cast<int>(DraftTokens(*g)), g->budget_cut);
    }
    g->sink->OnComplete(std::move(result));
  } catch (const std::exception& e) {  // the client may never hear back; the server goes on
    Log()->error("[{}] the result could not be delivered: {}", id, e.what());
  }
  std::erase_if(groups_, [g](const auto& p) { return p.get() == g; });
}

void Runtime::Fail(RequestGroup* g, const absl::Status& error) {
  const std::string detail = error.ToString();
  Complete(g,
           absl::Status(error.code(), StrCat("internal error in request '", g->params.request_id,
                                             "'; the server log has the details")),
           detail);
}

void Runtime::CheckGroups(double now) {
  std::vector<RequestGroup*> all;
  for (auto& g : groups_) all.push_back(g.get());
  // The next step carries every running agent's row (and maybe a prefill chunk): predict
  // with the whole batch, not one group's share of it.
  int next_rows = 0;
  for (const RequestGroup* g : all) {
    if (g->state != GroupState::kDecode) continue;
    for (const auto& a : g->agents) next_rows += a.finished() ? 0 : 1;
  }
  const double next_step_ms = latency_.StepMs(std::max(1, next_rows));
  for (RequestGroup* g : all) {
    try {
      // Finished drafts give their blocks back before the stats are published (the elastic
      // choice reads free blocks from them); the scheduler does it.
      scheduler_.ReleaseFinished(g);
      CheckGroup(g, now, next_step_ms);
    } catch (const std::exception& e) {  // this request fails, the others go on
      Fail(g, FromException(e, "request bookkeeping"));
    }
  }
}

void Runtime::CheckGroup(RequestGroup* g, double now, double next_step_ms) {
  GroupTiming t;
  t.next_step_ms = next_step_ms;
  t.prefill_left_ms =
      latency_.PrefillMs(static_cast<int>(g->params.prompt_tokens.size()) - g->prompt_computed);
  t.one_row_step_ms = latency_.StepMs(1);
  t.merge_reserve_ms = options_.merge_reserve_ms;
  t.max_queue_delay_ms = options_.max_queue_delay_ms;
  const std::string& id = g->params.request_id;
  switch (DecideGroup(*g, now, t)) {
    case GroupAction::kCancel:
      for (auto& a : g->agents) {
        if (!a.finished()) FinishAgent(*g, a, FinishReason::kCancelled, ctx_);
      }
      Complete(g, absl::CancelledError(StrCat("request '", id, "' was cancelled")));
      return;
    case GroupAction::kShed:
      Complete(g,
               absl::ResourceExhaustedError(StrCat(
                   "request '", id, "' waited ", static_cast<int64_t>(now - g->params.arrival_ms),
                   " ms without starting (max_queue_delay_ms ",
                   static_cast<int64_t>(options_.max_queue_delay_ms),
                   "): the server is at capacity; retry later or on another replica")));
      return;
    case GroupAction::kExpire:
      Complete(g, absl::DeadlineExceededError(StrCat("latency budget ended before request '", id,
                                                     "' finished its prefill")));
      return;
    case GroupAction::kCutBudget:
      g->budget_cut = true;
      for (auto& a : g->agents) {
        if (!a.finished()) FinishAgent(*g, a, FinishReason::kBudget, ctx_);
      }
      break;
    case GroupAction::kContinue:
      break;
  }
  if (AllAgentsFinished(*g) && MaybeStartSynthesis(g, now)) return;
  if (AllAgentsFinished(*g)) Complete(g, BuildResult(*g, now));
}

bool Runtime::MaybeStartSynthesis(RequestGroup* g, double now) {
  if (g->params.reasoning.merge != MergeStrategy::kSynthesize || g->synth_decided || g->cancelled) {
    return false;
  }
  g->synth_decided = true;
  std::vector<int32_t> prompt = SynthesisPrompt(*g, ctx_);
  if (prompt.empty()) return false;  // no drafts, or no room in the context: VOTE
  // Only if the whole pass (its prompt and max_tokens) fits the KV blocks free now (the drafts'
  // own blocks released first: a pass larger than the cache would preempt everything and never
  // be re-admitted) and the budget (its prefill, its tokens, the merge reserve).
  scheduler_.ReleaseFinished(g);
  const int64_t bs = blocks_.block_size();
  const int64_t pass_blocks =
      (static_cast<int64_t>(prompt.size()) + g->params.max_tokens + bs - 1) / bs + 1;
  if (!SynthesisFits(now, g->params.deadline_ms,
                     latency_.PrefillMs(static_cast<int>(prompt.size())),
                     latency_.StepMs(1) * g->params.max_tokens, options_.merge_reserve_ms,
                     pass_blocks, blocks_.num_available())) {
    return false;
  }
  StartSynthesis(*g, std::move(prompt));
  return true;
}

}  // namespace chorus
