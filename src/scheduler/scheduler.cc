#include "chorus/scheduler/scheduler.h"

#include <algorithm>

#include "chorus/core/status.h"

namespace chorus {

Scheduler::Scheduler(const SchedulerLimits& limits, BlockManager* blocks)
    : limits_(limits), blocks_(blocks) {}

bool Scheduler::Before(const RequestGroup* a, const RequestGroup* b) {
  if (a->params.priority != b->params.priority) return a->params.priority > b->params.priority;
  if (a->params.deadline_ms != b->params.deadline_ms) {
    return a->params.deadline_ms < b->params.deadline_ms;
  }
  return a->admit_seq < b->admit_seq;
}

void Scheduler::AddWaiting(RequestGroup* g) {
  g->state = GroupState::kWaiting;
  waiting_.push_back(g);
}

int Scheduler::running_agents() const {
  int n = 0;
  for (const auto* g : running_) n += static_cast<int>(g->agents.empty() ? g->params.reasoning.agents : g->agents.size());
  return n;
}

void Scheduler::FreeBlocks(RequestGroup* g) {
  for (int32_t b : g->prompt_table) blocks_->Unref(b);
  for (int32_t b : g->fork_blocks) blocks_->Unref(b);
  g->prompt_table.clear();
  g->fork_blocks.clear();
  for (auto& a : g->agents) {
    for (int32_t b : a.block_table) blocks_->Unref(b);
    a.block_table.clear();
  }
}

void Scheduler::Remove(RequestGroup* g) {
  FreeBlocks(g);
  std::erase(waiting_, g);
  std::erase(running_, g);
  std::erase(admitted_, g);
  g->state = GroupState::kDone;
}

void Scheduler::Preempt(RequestGroup* g) {
  FreeBlocks(g);
  g->prompt_computed = 0;
  for (auto& a : g->agents) a.computed = 0;
  std::erase(running_, g);
  AddWaiting(g);
  ++preemptions_;
}

bool Scheduler::Admit(RequestGroup* g) {
  const int bs = blocks_->block_size();
  const auto& prompt = g->params.prompt_tokens;
  const int p = static_cast<int>(prompt.size());
  const int num_blocks = (p + bs - 1) / bs;
  const int full = p / bs;
  const bool partial = p % bs != 0;
  const int n = g->params.reasoning.agents;

  g->prompt_hashes.clear();
  uint64_t h = 0;
  for (int i = 0; i < full; ++i) {
    h = BlockManager::ChainHash(h, prompt.data() + i * bs, bs);
    g->prompt_hashes.push_back(h);
  }
  std::vector<int32_t> table;
  for (int i = 0; i < full; ++i) {
    const int32_t b = blocks_->Lookup(g->prompt_hashes[i]);
    if (b < 0) break;
    table.push_back(b);
  }
  const int hits = static_cast<int>(table.size());
  // Blocks to hold now (prompt misses, fork copies) plus one growth block per agent and the
  // blocks for tokens that preempted agents already generated.
  int need = (num_blocks - hits) + (partial ? n - 1 : 0) + n;
  for (const auto& a : g->agents) {
    need += (static_cast<int>(a.tokens.size()) - p + bs - 1) / bs;
  }
  if (blocks_->num_available() < need) {
    for (int32_t b : table) blocks_->Unref(b);
    return false;
  }
  while (static_cast<int>(table.size()) < num_blocks) table.push_back(blocks_->Allocate());
  if (partial) {
    for (int i = 0; i < n - 1; ++i) g->fork_blocks.push_back(blocks_->Allocate());
  }
  g->prompt_table = std::move(table);
  g->prompt_computed = hits * bs;
  if (g->prompt_computed == p) g->prompt_computed = p - 1;  // recompute one row for logits
  if (!g->forked) g->cached_prompt_tokens = g->prompt_computed;
  g->computed_prompt_tokens += p - g->prompt_computed;
  g->state = GroupState::kPrefill;
  return true;
}

bool Scheduler::GrowAgentTables() {
  const int bs = blocks_->block_size();
  std::sort(running_.begin(), running_.end(), Before);
  for (size_t gi = 0; gi < running_.size(); ++gi) {
    RequestGroup* g = running_[gi];
    if (g->state != GroupState::kDecode) continue;
    for (auto& a : g->agents) {
      if (a.finished()) continue;
      const size_t need = (a.tokens.size() + bs - 1) / bs;
      while (a.block_table.size() < need) {
        const int32_t b = blocks_->Allocate();
        if (b >= 0) {
          a.block_table.push_back(b);
          continue;
        }
        // Out of blocks: preempt the lowest-ordered running group (maybe this one).
        RequestGroup* victim = running_.back();
        Preempt(victim);
        if (victim == g) return false;  // restart: the order changed
      }
    }
  }
  return true;
}

StepPlan Scheduler::Schedule() {
  admitted_.clear();
  while (!GrowAgentTables()) {
  }
  std::sort(waiting_.begin(), waiting_.end(), Before);
  while (!waiting_.empty()) {
    RequestGroup* g = waiting_.front();
    if (running_agents() + g->params.reasoning.agents > limits_.max_running_agents) break;
    if (!Admit(g)) break;
    waiting_.erase(waiting_.begin());
    running_.push_back(g);
    admitted_.push_back(g);
    // A preempted group that already had agents rebuilds them at the fork.
  }
  std::sort(running_.begin(), running_.end(), Before);

  StepPlan plan;
  int budget = limits_.max_num_batched_tokens;
  for (RequestGroup* g : running_) {
    if (g->state != GroupState::kDecode) continue;
    for (auto& a : g->agents) {
      if (a.finished() || budget <= 0) continue;
      const int pending = static_cast<int>(a.tokens.size()) - a.computed;
      const int len = std::min(pending, budget);
      if (len <= 0) continue;
      plan.segments.push_back({g, a.index, a.computed, len, len == pending});
      budget -= len;
    }
  }
  for (RequestGroup* g : running_) {
    if (g->state != GroupState::kPrefill || budget <= 0) continue;
    const int p = static_cast<int>(g->params.prompt_tokens.size());
    const int len = std::min(p - g->prompt_computed, budget);
    plan.segments.push_back({g, -1, g->prompt_computed, len, g->prompt_computed + len == p});
    budget -= len;
  }
  return plan;
}

}  // namespace chorus
