#include "chorus/runtime/runtime.h"

#include <spdlog/spdlog.h>

#include <algorithm>

#include "chorus/core/status.h"
#include "chorus/core/str_cat.h"

namespace chorus {

absl::StatusOr<std::unique_ptr<Runtime>> Runtime::Create(const RuntimeOptions& options,
                                                         const Model* model, Backend* backend,
                                                         const Clock* clock) {
  CHORUS_ASSIGN_OR_RETURN(
      auto exec,
      CreateSingleDeviceExecutor(model, backend, options.kv_num_blocks, options.kv_block_size));
  return Create(options, model, std::move(exec), clock);
}

absl::StatusOr<std::unique_ptr<Runtime>> Runtime::Create(const RuntimeOptions& options,
                                                         const Model* model,
                                                         std::unique_ptr<ForwardExecutor> executor,
                                                         const Clock* clock) {
  if (executor == nullptr) return absl::InvalidArgumentError("runtime: no executor");
  return std::unique_ptr<Runtime>(new Runtime(options, model, std::move(executor), clock));
}

Runtime::Runtime(const RuntimeOptions& options, const Model* model,
                 std::unique_ptr<ForwardExecutor> executor, const Clock* clock)
    : options_(options),
      model_(model),
      clock_(clock),
      executor_(std::move(executor)),
      blocks_(options.kv_num_blocks, options.kv_block_size, options.prefix_cache),
      scheduler_(options.scheduler, &blocks_),
      engine_(executor_.get()) {
  ctx_.tokenizer = &model->tokenizer();
  ctx_.blocks = &blocks_;
  ctx_.executor = executor_.get();
  ctx_.clock = clock;
  ctx_.context_length = model->config().context_length;
  ctx_.vocab_size = model->config().vocab_size;
  stats_.kv_blocks_total = options.kv_num_blocks;
}

Runtime::~Runtime() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void Runtime::Start() {
  Calibrate();
  last_progress_ms_ = clock_->NowMs();
  thread_ = std::thread([this] { Loop(); });
}

void Runtime::Calibrate() {
  // Prefill of 32 tokens, then steps of 1 and 8 rows, on blocks borrowed for the occasion, so
  // that the first requests' budgets use measured times, not guesses.
  const int bs = options_.kv_block_size;
  const int n = 48;
  std::vector<int32_t> table;
  for (int i = 0; i < (n + bs - 1) / bs; ++i) {
    const int32_t b = blocks_.Allocate();
    if (b < 0) break;
    table.push_back(b);
  }
  if (static_cast<int>(table.size()) * bs >= n && model_->config().context_length >= n) {
    ForwardBatch b;
    b.block_tables = table;
    b.max_blocks_per_seq = static_cast<int>(table.size());
    std::vector<float> logits;
    auto run = [&](int begin, int len) {
      b.tokens.assign(len, 0);
      b.positions.clear();
      for (int p = begin; p < begin + len; ++p) b.positions.push_back(p);
      b.seq_of_token.assign(len, 0);
      b.logit_rows.clear();
      for (int r = len > 8 ? len - 1 : 0; r < len; ++r) b.logit_rows.push_back(r);
      const double t0 = clock_->NowMs();
      const bool ok = engine_.Forward(b, &logits).ok();
      return ok ? clock_->NowMs() - t0 : -1.0;
    };
    const double prefill = run(0, 32);
    const double one = run(32, 1);
    const double eight = run(33, 8);
    if (prefill > 0 && one > 0 && eight > 0) {
      std::lock_guard<std::mutex> lock(mu_);
      prefill_ms_per_token_ = prefill / 32;
      predictor_.Observe(1, one);
      predictor_.Observe(8, eight);
    }
  }
  for (int32_t blk : table) blocks_.Unref(blk);
}

double Runtime::PredictPrefillMs(int prompt_tokens) const {
  std::lock_guard<std::mutex> lock(mu_);
  return prefill_ms_per_token_ * prompt_tokens;
}

absl::Status Runtime::Submit(GenerateParams params, std::shared_ptr<ResultSink> sink) {
  const int agents = params.reasoning.agents;
  const double now = clock_->NowMs();
  std::lock_guard<std::mutex> lock(mu_);
  if (draining_ || stop_)
    return absl::UnavailableError("server is draining; retry on another replica");
  if (live_.count(params.request_id)) {
    return absl::AlreadyExistsError(
        StrCat("request_id '", params.request_id, "' is already in flight"));
  }
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
  const double prefill = prefill_ms_per_token_ * static_cast<double>(params.prompt_tokens.size());
  if (!PrefillFits(now, params.deadline_ms, prefill, predictor_.PredictMs(agents),
                   options_.merge_reserve_ms)) {
    return absl::DeadlineExceededError(
        StrCat("latency budget of ", static_cast<int64_t>(params.deadline_ms - params.arrival_ms),
               " ms cannot cover the prefill of ", params.prompt_tokens.size(),
               " prompt tokens (predicted ", static_cast<int64_t>(prefill), " ms)"));
  }
  auto g = std::make_unique<RequestGroup>(std::move(params), std::move(sink));
  g->admit_seq = next_seq_++;
  live_[g->params.request_id] = g.get();
  queued_requests_ += 1;
  queued_agents_ += agents;
  inbox_.push_back(std::move(g));
  cv_.notify_all();
  return absl::OkStatus();
}

bool Runtime::Abort(const std::string& request_id) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = live_.find(request_id);
  if (it == live_.end()) return false;
  it->second->cancelled = true;
  cv_.notify_all();
  return true;
}

RuntimeStats Runtime::Stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

void Runtime::BeginDrain() {
  std::lock_guard<std::mutex> lock(mu_);
  draining_ = true;
}

void Runtime::CancelAll() {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& [id, g] : live_) g->cancelled = true;
  cv_.notify_all();
}

int Runtime::InFlight() const {
  std::lock_guard<std::mutex> lock(mu_);
  return static_cast<int>(live_.size());
}

bool Runtime::Idle() const { return InFlight() == 0; }

void Runtime::TakeInbox() {
  std::vector<std::unique_ptr<RequestGroup>> fresh;
  {
    std::lock_guard<std::mutex> lock(mu_);
    fresh.swap(inbox_);
  }
  for (auto& g : fresh) {
    scheduler_.AddWaiting(g.get());
    groups_.push_back(std::move(g));
  }
}

void Runtime::Complete(RequestGroup* g, absl::StatusOr<GenerateResult> result) {
  const bool ever_admitted = g->first_scheduled_ms >= 0;
  scheduler_.Remove(g);
  {
    std::lock_guard<std::mutex> lock(mu_);
    live_.erase(g->params.request_id);
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
  if (!result.ok() && result.status().code() != absl::StatusCode::kCancelled) {
    spdlog::warn("[{}] failed: {}", g->params.request_id, result.status().ToString());
  } else {
    spdlog::debug("[{}] {} after {:.1f} ms", g->params.request_id,
                  result.ok() ? "done" : "cancelled", clock_->NowMs() - g->params.arrival_ms);
  }
  if (options_.observer != nullptr) {
    const double now = clock_->NowMs();
    const GenerateParams& p = g->params;
    std::string status = "ok";
    if (!result.ok()) {
      status = absl::StatusCodeToString(result.status().code());
      for (char& c : status) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    }
    int tokens = 0;
    for (const auto& a : g->agents) tokens += a.draft.num_tokens;
    options_.observer->OnRequestEnd(status,
                                    ever_admitted ? g->first_scheduled_ms - p.arrival_ms : -1,
                                    g->first_token_ms >= 0 ? g->first_token_ms - p.arrival_ms : -1,
                                    now - p.arrival_ms, tokens, g->budget_cut);
  }
  g->sink->OnComplete(std::move(result));
  std::erase_if(groups_, [g](const auto& p) { return p.get() == g; });
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
  const double next_step_ms = predictor_.PredictMs(std::max(1, next_rows));
  for (RequestGroup* g : all) {
    if (g->cancelled || g->sink->Cancelled()) {
      for (auto& a : g->agents) {
        if (!a.finished()) FinishAgent(*g, a, FinishReason::kCancelled, ctx_);
      }
      Complete(g,
               absl::CancelledError(StrCat("request '", g->params.request_id, "' was cancelled")));
      continue;
    }
    const bool has_drafts = g->forked;
    if (g->state == GroupState::kDecode) {
      if (ShouldStopDrafting(now, g->params.deadline_ms, next_step_ms, options_.merge_reserve_ms)) {
        g->budget_cut = true;
        for (auto& a : g->agents) {
          if (!a.finished()) FinishAgent(*g, a, FinishReason::kBudget, ctx_);
        }
      }
    } else {
      // Waiting or prefilling: can the prefill still finish in time?
      const int left = static_cast<int>(g->params.prompt_tokens.size()) - g->prompt_computed;
      double prefill_ms;
      {
        std::lock_guard<std::mutex> lock(mu_);
        prefill_ms = prefill_ms_per_token_ * left;
      }
      if (!PrefillFits(now, g->params.deadline_ms, prefill_ms, predictor_.PredictMs(1),
                       options_.merge_reserve_ms)) {
        if (has_drafts) {  // preempted after drafting: merge what exists
          g->budget_cut = true;
          for (auto& a : g->agents) {
            if (!a.finished()) FinishAgent(*g, a, FinishReason::kBudget, ctx_);
          }
        } else {
          Complete(g, absl::DeadlineExceededError(StrCat("latency budget ended before request '",
                                                         g->params.request_id,
                                                         "' finished its prefill")));
          continue;
        }
      }
    }
    if (AllAgentsFinished(*g) && MaybeStartSynthesis(g, now)) continue;
    if (AllAgentsFinished(*g)) Complete(g, BuildResult(*g, now));
  }
}

bool Runtime::MaybeStartSynthesis(RequestGroup* g, double now) {
  if (g->params.reasoning.merge != MergeStrategy::kSynthesize || g->synth_decided || g->cancelled) {
    return false;
  }
  g->synth_decided = true;
  std::vector<int32_t> prompt = SynthesisPrompt(*g, ctx_);
  if (prompt.empty()) return false;  // no drafts, or no room in the context: VOTE
  // Only if the whole pass fits the budget: its prefill, its tokens, the merge reserve.
  double prefill_ms;
  {
    std::lock_guard<std::mutex> lock(mu_);
    prefill_ms = prefill_ms_per_token_ * static_cast<double>(prompt.size());
  }
  const double decode_ms = predictor_.PredictMs(1) * g->params.max_tokens;
  if (!PrefillFits(now, g->params.deadline_ms, prefill_ms, decode_ms, options_.merge_reserve_ms)) {
    return false;
  }
  StartSynthesis(*g, std::move(prompt));
  return true;
}

void Runtime::ApplyStep(const StepPlan& plan, const StepOutput& out) {
  const int vocab = ctx_.vocab_size;
  std::vector<const float*> logits_of(plan.segments.size(), nullptr);
  for (size_t i = 0; i < out.logit_segments.size(); ++i) {
    logits_of[out.logit_segments[i]] = out.logits.data() + i * static_cast<size_t>(vocab);
  }
  std::vector<int> sampled_of(plan.segments.size(), -1);
  for (size_t i = 0; i < out.sampled_segments.size(); ++i)
    sampled_of[out.sampled_segments[i]] = static_cast<int>(i);
  int64_t generated = 0;
  for (size_t i = 0; i < plan.segments.size(); ++i) {
    const StepSegment& s = plan.segments[i];
    RequestGroup& g = *s.group;
    if (s.agent < 0) {
      g.prompt_computed += s.len;
      PublishPromptBlocks(g, ctx_);
      if (s.logits) ForkAgents(g, logits_of[i], ctx_);
    } else {
      AgentSequence& a = g.agents[s.agent];
      a.computed += s.len;
      if (s.logits && sampled_of[i] >= 0) {
        ApplySampled(g, s.agent, out.sampled[sampled_of[i]], ctx_);
        ++generated;
      } else if (s.logits) {
        SampleNext(g, s.agent, logits_of[i], ctx_);
        ++generated;
      }
    }
  }
  // Once per group (a group has one segment per agent): the vote re-extracts answers.
  RequestGroup* last = nullptr;
  for (const StepSegment& s : plan.segments) {
    if (s.group == last) continue;  // a group's segments are adjacent in the plan
    last = s.group;
    ApplyEarlyStops(*s.group, ctx_);
  }
  std::lock_guard<std::mutex> lock(mu_);
  stats_.tokens_generated += generated;
}

void Runtime::PublishStats() {
  std::lock_guard<std::mutex> lock(mu_);
  stats_.running_requests = static_cast<int>(scheduler_.running().size());
  stats_.waiting_requests = static_cast<int>(scheduler_.waiting().size() + inbox_.size());
  stats_.running_agents = scheduler_.running_agents();
  int waiting_agents = 0;
  for (const auto* g : scheduler_.waiting()) waiting_agents += g->params.reasoning.agents;
  for (const auto& g : inbox_) waiting_agents += g->params.reasoning.agents;
  stats_.waiting_agents = waiting_agents;
  stats_.kv_blocks_used = blocks_.num_used();
  stats_.prefix_cache_blocks = blocks_.num_cached_idle();
  stats_.preemptions = scheduler_.preemptions();
}

void Runtime::Loop() {
  StepPlan plan;
  StepOutput out;
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      if (stop_) break;
    }
    last_progress_ms_ = clock_->NowMs();
    TakeInbox();
    CheckGroups(clock_->NowMs());
    plan = scheduler_.Schedule();
    for (RequestGroup* g : scheduler_.admitted()) {
      std::lock_guard<std::mutex> lock(mu_);
      if (g->first_scheduled_ms < 0) {
        g->first_scheduled_ms = clock_->NowMs();
        queued_requests_ -= 1;
        queued_agents_ -= g->params.reasoning.agents;
        stats_.prompt_tokens_cached += g->cached_prompt_tokens;
      }
    }
    PublishStats();
    if (plan.empty()) {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait_for(lock, std::chrono::milliseconds(groups_.empty() ? 50 : 2),
                   [this] { return stop_ || !inbox_.empty(); });
      continue;
    }
    if (options_.before_step) options_.before_step();
    int prefill_rows = 0;
    for (const auto& s : plan.segments) prefill_rows += s.agent < 0 ? s.len : 0;
    const double t0 = clock_->NowMs();
    absl::Status st;
    try {
      st = engine_.Step(plan, &out);
    } catch (const std::exception& e) {  // e.g. std::bad_alloc: fail this step, keep serving
      st = absl::ResourceExhaustedError(StrCat("engine step threw: ", e.what()));
    }
    const double dt = clock_->NowMs() - t0;
    predictor_.Observe(plan.num_rows(), dt);
    if (options_.observer != nullptr) options_.observer->OnStep(plan.num_rows(), dt);
    {
      std::lock_guard<std::mutex> lock(mu_);
      stats_.steps_run++;
      stats_.prompt_tokens_computed += prefill_rows;
      if (prefill_rows >= 16) {
        prefill_ms_per_token_ += 0.3 * (dt / plan.num_rows() - prefill_ms_per_token_);
      }
    }
    if (!st.ok()) {
      // An engine error fails the requests of this step, never the process.
      std::vector<RequestGroup*> failed;
      for (const auto& s : plan.segments) {
        if (std::find(failed.begin(), failed.end(), s.group) == failed.end())
          failed.push_back(s.group);
      }
      for (RequestGroup* g : failed) {
        for (auto& a : g->agents) {
          if (!a.finished()) FinishAgent(*g, a, FinishReason::kCancelled, ctx_);
        }
        Complete(g, absl::InternalError(StrCat("engine step failed: ", st.message())));
      }
      continue;
    }
    ApplyStep(plan, out);
    CheckGroups(clock_->NowMs());
    PublishStats();
  }
  // Shutdown: every request still here ends with a definite status.
  TakeInbox();
  std::vector<RequestGroup*> all;
  for (auto& g : groups_) all.push_back(g.get());
  for (RequestGroup* g : all) {
    for (auto& a : g->agents) {
      if (!a.finished()) FinishAgent(*g, a, FinishReason::kCancelled, ctx_);
    }
    Complete(g, absl::CancelledError("server shutting down"));
  }
}

}  // namespace chorus
