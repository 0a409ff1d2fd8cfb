// Runtime: construction, calibration and the engine loop (inbox -> checks -> schedule ->
// step -> apply). Entry points and request completion are in requests.cc.
#include "chorus/runtime/runtime.h"

#include <algorithm>

#include "chorus/core/status.h"
#include "runtime_internal.h"

namespace chorus {

using runtime_internal::DraftTokens;
using runtime_internal::FromException;

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
  ctx_.clock = clock;
  ctx_.context_length = model->config().context_length;
  ctx_.vocab_size = model->config().vocab_size;
  stats_.kv_blocks_total = options.kv_num_blocks;
}

Runtime::~Runtime() {
  {
    MutexLock lock(&mu_);
    stop_ = true;
  }
  cv_.NotifyAll();
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
  const std::vector<int32_t> table = scheduler_.LendBlocks((n + bs - 1) / bs);
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
    // Untimed: a backend's one-time work (the CPU's packed weight copies, made on the first
    // matmul of several tokens) lands here.
    run(0, 1);
    run(0, 8);
    // Each the faster of two runs: one slow sample (a page-fault burst, a busy neighbour)
    // would otherwise make admission refuse every short budget until a prefill is measured,
    // and a refused request measures nothing.
    auto best_of_two = [&](int begin, int len) {
      const double a = run(begin, len), b = run(begin, len);
      return a < 0 || b < 0 ? -1.0 : std::min(a, b);
    };
    const double prefill = best_of_two(0, 32);
    const double one = best_of_two(32, 1);
    const double eight = best_of_two(33, 8);
    if (prefill > 0 && one > 0 && eight > 0) latency_.Calibrate(32, prefill, one, eight);
  }
  scheduler_.ReturnBlocks(table);
}

void Runtime::TakeInbox() {
  std::vector<std::unique_ptr<RequestGroup>> fresh;
  {
    MutexLock lock(&mu_);
    fresh.swap(inbox_);
  }
  for (auto& g : fresh) {
    scheduler_.AddWaiting(g.get());
    groups_.push_back(std::move(g));
  }
}

void Runtime::ApplyStep(const StepPlan& plan, const StepOutput& out) {
  const int vocab = ctx_.vocab_size;
  const size_t n = plan.segments.size();
  std::vector<const float*> logits_of(n, nullptr);
  for (size_t i = 0; i < out.logit_segments.size(); ++i) {
    logits_of[out.logit_segments[i]] = out.logits.data() + i * static_cast<size_t>(vocab);
  }
  std::vector<int> sampled_of(n, -1);
  for (size_t i = 0; i < out.sampled_segments.size(); ++i)
    sampled_of[out.sampled_segments[i]] = static_cast<int>(i);
  int64_t generated = 0;
  std::vector<std::pair<RequestGroup*, absl::Status>> failed;
  // A group's segments are adjacent in the plan (its agents' rows, or its prefill chunk).
  for (size_t begin = 0, end = 0; begin < n; begin = end) {
    RequestGroup& g = *plan.segments[begin].group;
    while (end < n && plan.segments[end].group == &g) ++end;
    const int64_t before = DraftTokens(g);
    try {
      for (size_t i = begin; i < end; ++i) {
        const StepSegment& s = plan.segments[i];
        if (s.agent < 0) {
          g.prompt_computed += s.len;
          if (s.logits) ForkAgents(g, logits_of[i], ctx_);  // samples every first token
        } else {
          g.agents[s.agent].computed += s.len;
          if (s.logits && sampled_of[i] >= 0) {
            ApplySampled(g, s.agent, out.sampled[sampled_of[i]], ctx_);
          } else if (s.logits) {
            SampleNext(g, s.agent, logits_of[i], ctx_);
          }
        }
      }
      ApplyEarlyStops(g, ctx_);          // once per group: the vote re-extracts answers
    } catch (const std::exception& e) {  // e.g. std::bad_alloc: fail this request only
      failed.emplace_back(&g, FromException(e, "applying a step"));
    }
    // Counted as the drafts count them (first token at the fork included, end-of-text not),
    // so the sum matches usage.completion_tokens and chorus_generated_tokens_total.
    generated += DraftTokens(g) - before;
  }
  {
    MutexLock lock(&mu_);
    stats_.tokens_generated += generated;
  }
  for (auto& [g, error] : failed) Fail(g, error);
}

void Runtime::PublishStats() {
  MutexLock lock(&mu_);
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

void Runtime::NoteAdmitted() {
  for (RequestGroup* g : scheduler_.admitted()) {
    MutexLock lock(&mu_);
    if (g->first_scheduled_ms < 0) {
      g->first_scheduled_ms = clock_->NowMs();
      queued_requests_ -= 1;
      queued_agents_ -= g->params.reasoning.agents;
      stats_.prompt_tokens_cached += g->cached_prompt_tokens;
    }
  }
}

void Runtime::RunStep(const StepPlan& plan, StepOutput& out) {
  int prefill_rows = 0;
  for (const auto& s : plan.segments) prefill_rows += s.agent < 0 ? s.len : 0;
  absl::Status st;
  double t0 = clock_->NowMs();
  try {
    if (options_.before_step) options_.before_step();
    t0 = clock_->NowMs();
    st = engine_.Step(plan, &out);
  } catch (const std::exception& e) {  // e.g. std::bad_alloc: fail this step, keep serving
    st = FromException(e, "engine step");
  }
  const double dt = clock_->NowMs() - t0;
  last_step_ms_ = dt;
  latency_.ObserveStep(plan.num_rows(), prefill_rows, dt);
  if (options_.observer != nullptr) options_.observer->OnStep(plan.num_rows(), dt);
  {
    MutexLock lock(&mu_);
    stats_.steps_run++;
    stats_.prompt_tokens_computed += prefill_rows;
  }
  if (st.ok()) {
    ApplyStep(plan, out);
    return;
  }
  // An engine error fails the requests of this step, never the process.
  std::vector<RequestGroup*> failed;
  for (const auto& s : plan.segments) {
    if (std::find(failed.begin(), failed.end(), s.group) == failed.end()) {
      failed.push_back(s.group);
    }
  }
  for (RequestGroup* g : failed) Fail(g, st);
}

bool Runtime::RunOnce(StepPlan& plan, StepOutput& out) {
  TakeInbox();
  CheckGroups(clock_->NowMs());
  plan = scheduler_.Schedule();
  NoteAdmitted();
  PublishStats();
  if (plan.empty()) return false;
  RunStep(plan, out);
  CheckGroups(clock_->NowMs());
  PublishStats();
  return true;
}

void Runtime::Loop() {
  StepPlan plan;
  StepOutput out;
  for (;;) {
    {
      MutexLock lock(&mu_);
      if (stop_) break;
    }
    last_progress_ms_ = clock_->NowMs();
    bool ran = true;
    const double iteration_start = clock_->NowMs();
    last_step_ms_ = -1;
    try {
      ran = RunOnce(plan, out);
      if (ran && last_step_ms_ >= 0) {
        // What an iteration costs beyond its forward step (scheduling, sampling, stops, sinks):
        // the elastic choice predicts whole iterations, not just forward passes.
        latency_.ObserveIterationOverhead(
            std::max(0.0, clock_->NowMs() - iteration_start - last_step_ms_));
      }
    } catch (const std::exception& e) {
      // Outside any one request (inbox, scheduling): fail what is in flight, keep the process.
      const absl::Status error = FromException(e, "engine loop");
      std::vector<RequestGroup*> all;
      for (auto& g : groups_) all.push_back(g.get());
      for (RequestGroup* g : all) Fail(g, error);
    }
    if (!ran) {
      MutexLock lock(&mu_);
      if (!stop_ && inbox_.empty()) {
        cv_.WaitFor(&mu_, std::chrono::milliseconds(groups_.empty() ? 50 : 2));
      }
    }
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
