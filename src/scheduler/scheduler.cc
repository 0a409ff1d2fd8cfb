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

int Scheduler::LiveAgents(const RequestGroup& g) {
  if (!g.forked) return g.params.reasoning.agents;
  int n = 0;
  for (const auto& a : g.agents) n += a.finished() ? 0 : 1;
  return n;
}

int Scheduler::running_agents() const {
  int n = 0;
  for (const auto* g : running_) n += LiveAgents(*g);
  return n;
}

void Scheduler::FreeBlocks(RequestGroup* g) {
  // A copy planned into a block of this group is dropped with it.
  for (const auto& a : g->agents) {
    std::erase_if(copies_, [&](const auto& c) {
      return std::find(a.block_table.begin(), a.block_table.end(), c.second) != a.block_table.end();
    });
  }
  UnrefAll(g->prompt_table);
  UnrefAll(g->fork_blocks);
  for (auto& a : g->agents) UnrefAll(a.block_table);
  g->fork_pending = false;
  g->prompt_published = 0;
}

void Scheduler::UnrefAll(std::vector<int32_t>& table) {
  for (int32_t b : table) blocks_->Unref(b);
  table.clear();
}

std::vector<int32_t> Scheduler::LendBlocks(int n) {
  std::vector<int32_t> out;
  for (int i = 0; i < n; ++i) {
    const int32_t b = blocks_->Allocate();
    if (b < 0) break;
    out.push_back(b);
  }
  return out;
}

void Scheduler::ReturnBlocks(const std::vector<int32_t>& blocks) {
  for (int32_t b : blocks) blocks_->Unref(b);
}

void Scheduler::PublishPrompt(RequestGroup* g) {
  const int bs = blocks_->block_size();
  const int full_done =
      std::min(g->prompt_computed / bs, static_cast<int>(g->prompt_hashes.size()));
  if (g->prompt_table.empty()) return;
  for (int i = g->prompt_published; i < full_done; ++i) {
    blocks_->Publish(g->prompt_table[i], g->prompt_hashes[i],
                     g->params.prompt_tokens.data() + static_cast<size_t>(i) * bs,
                     i == 0 ? -1 : g->prompt_table[i - 1], g->params.cache_salt);
  }
  g->prompt_published = std::max(g->prompt_published, full_done);
}

void Scheduler::Fork(RequestGroup* g) {
  // Every live agent refs the full prompt blocks; the partial last block goes to the first
  // live agent as is and is copied for the others (copy-on-write at the fork).
  const int bs = blocks_->block_size();
  const bool partial = g->params.prompt_tokens.size() % bs != 0;
  const size_t nb = g->prompt_table.size();
  const size_t shared = partial ? nb - 1 : nb;
  size_t fork_next = 0;
  bool last_taken = false;
  for (auto& a : g->agents) {
    // The synthesis agent has its own prompt: it recomputes through the decode path.
    if (a.finished() || a.index == g->synth_agent) continue;
    a.block_table.assign(g->prompt_table.begin(), g->prompt_table.end());
    for (size_t b = 0; b < shared; ++b) blocks_->Ref(g->prompt_table[b]);
    if (!partial) continue;
    if (!last_taken) {
      last_taken = true;  // takes over the group's reference
      continue;
    }
    CHORUS_CHECK(fork_next < g->fork_blocks.size());
    const int32_t copy = g->fork_blocks[fork_next++];
    copies_.emplace_back(g->prompt_table.back(), copy);
    a.block_table.back() = copy;
  }
  // Drop the group's own references: the agents hold theirs now.
  for (size_t b = 0; b < shared; ++b) blocks_->Unref(g->prompt_table[b]);
  if (partial && !last_taken) blocks_->Unref(g->prompt_table.back());
  for (size_t i = fork_next; i < g->fork_blocks.size(); ++i) blocks_->Unref(g->fork_blocks[i]);
  g->fork_blocks.clear();
  g->prompt_table.clear();
  g->fork_pending = false;
}

void Scheduler::ReleaseFinished(RequestGroup* g) {
  for (auto& a : g->agents) {
    if (a.finished()) UnrefAll(a.block_table);
  }
  if (g->fork_pending && LiveAgents(*g) == 0) {  // nobody left to hand the prompt to
    PublishPrompt(g);
    UnrefAll(g->prompt_table);
    UnrefAll(g->fork_blocks);
    g->fork_pending = false;
  }
}

void Scheduler::Remove(RequestGroup* g) {
  PublishPrompt(g);  // computed prompt blocks stay reusable after a cancel
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

bool Scheduler::AdmitSynthesisOnly(RequestGroup* g, AgentSequence& synth) {
  // The pass recomputes its whole prompt through the decode path: all of its blocks now, one
  // more to grow.
  const int bs = blocks_->block_size();
  const int have = static_cast<int>((synth.tokens.size() + bs - 1) / bs);
  if (blocks_->num_available() < have + 1) return false;
  for (int i = 0; i < have; ++i) synth.block_table.push_back(blocks_->Allocate());
  synth.computed = 0;
  g->state = GroupState::kDecode;
  return true;
}

bool Scheduler::Admit(RequestGroup* g) {
  if (g->synth_agent >= 0 && !g->agents[g->synth_agent].finished()) {
    return AdmitSynthesisOnly(g, g->agents[g->synth_agent]);
  }
  const int bs = blocks_->block_size();
  const auto& prompt = g->params.prompt_tokens;
  const int p = static_cast<int>(prompt.size());
  const int num_blocks = (p + bs - 1) / bs;
  const int full = p / bs;
  const bool partial = p % bs != 0;
  const int n = g->params.reasoning.agents;

  g->prompt_hashes.clear();
  const uint64_t salt = g->params.cache_salt;
  uint64_t h = salt;
  for (int i = 0; i < full; ++i) {
    h = BlockManager::ChainHash(h, prompt.data() + i * bs, bs);
    g->prompt_hashes.push_back(h);
  }
  // Agents still to run, and the blocks their generated tokens need (after preemption).
  int live = g->forked ? 0 : n;
  int generated_blocks = 0;
  for (const auto& a : g->agents) {
    if (a.finished() || a.index == g->synth_agent) continue;
    ++live;
    generated_blocks += (static_cast<int>(a.tokens.size()) - p + bs - 1) / bs;
  }
  std::vector<int32_t> table;
  for (int i = 0; i < full; ++i) {
    const int32_t parent = i == 0 ? -1 : table.back();
    const int32_t b = blocks_->Lookup(g->prompt_hashes[i], prompt.data() + i * bs, parent, salt);
    if (b < 0) break;
    table.push_back(b);
  }
  const int hits = static_cast<int>(table.size());
  // Blocks to hold now (prompt misses, fork copies) plus one growth block per live agent and
  // the blocks for tokens that preempted agents already generated.
  const int copies = partial ? std::max(0, live - 1) : 0;
  const int need = (num_blocks - hits) + copies + live + generated_blocks;
  if (blocks_->num_available() < need) {
    for (int32_t b : table) blocks_->Unref(b);
    return false;
  }
  while (static_cast<int>(table.size()) < num_blocks) table.push_back(blocks_->Allocate());
  for (int i = 0; i < copies; ++i) g->fork_blocks.push_back(blocks_->Allocate());
  g->prompt_table = std::move(table);
  g->prompt_published = hits;
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

void Scheduler::AdmitWaiting() {
  std::sort(waiting_.begin(), waiting_.end(), Before);
  std::vector<RequestGroup*> still_waiting, passed;
  for (size_t i = 0; i < waiting_.size(); ++i) {
    RequestGroup* g = waiting_[i];
    const bool fits_agents = running_agents() + LiveAgents(*g) <= limits_.max_running_agents;
    if (fits_agents && Admit(g)) {
      // A preempted group that already had agents rebuilds them at the fork.
      running_.push_back(g);
      admitted_.push_back(g);
      g->bypassed = 0;
      for (RequestGroup* w : passed) ++w->bypassed;
      continue;
    }
    still_waiting.push_back(g);
    passed.push_back(g);
    if (g->bypassed >= limits_.max_admission_bypass) {  // aged: nothing passes it any more
      still_waiting.insert(still_waiting.end(), waiting_.begin() + i + 1, waiting_.end());
      break;
    }
  }
  waiting_ = std::move(still_waiting);
}

StepPlan Scheduler::Schedule() {
  admitted_.clear();
  copies_.clear();
  for (RequestGroup* g : running_) {
    PublishPrompt(g);
    if (g->fork_pending) Fork(g);
    ReleaseFinished(g);
  }
  while (!GrowAgentTables()) {
  }
  AdmitWaiting();
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
  plan.block_copies = std::move(copies_);
  copies_.clear();
  return plan;
}

}  // namespace chorus
