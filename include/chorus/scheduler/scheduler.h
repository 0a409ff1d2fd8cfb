// Request-centric scheduler with continuous batching, and the only code that allocates, refs,
// unrefs or publishes KV blocks (BlockManager's mutators). Each call to Schedule():
//   0. carries out what the last step decided: registers newly computed full prompt blocks in
//      the prefix cache, gives forked agents their block tables (the partial last prompt block
//      is copied for all but one agent: the copies go in the plan, for the engine to run
//      before the forward), and frees the blocks of agents that finished;
//   1. gives every decoding agent the KV blocks its tokens need, preempting (by recompute) the
//      lowest-priority, latest-deadline running group when blocks run out;
//   2. admits waiting groups whole (all N agents, never half) in order of priority, then
//      earliest deadline, while agents and KV blocks allow (prefix-cache hits reuse blocks).
//      A group that does not fit does not stop smaller ones behind it (no head-of-line
//      blocking) until it has been passed max_admission_bypass times; then nothing passes it
//      until it is admitted (aging, so a large group is never starved);
//   3. plans one step under the token budget: one row per decoding agent (more while an agent
//      catches up after preemption), then chunked prefill of admitted prompts.
// New groups join between steps. Engine thread only; groups are owned by the runtime.
#pragma once

#include <vector>

#include "chorus/kv_cache/block_manager.h"
#include "chorus/sequence/step.h"

namespace chorus {

struct SchedulerLimits {
  int max_num_batched_tokens = 512;
  int max_running_agents = 256;
  // Admissions past a waiting group that does not fit before it blocks those behind it.
  int max_admission_bypass = 8;
};

class Scheduler {
 public:
  Scheduler(const SchedulerLimits& limits, BlockManager* blocks);

  void AddWaiting(RequestGroup* group);
  StepPlan Schedule();
  // Takes the group out of the scheduler and releases every block it holds.
  void Remove(RequestGroup* group);
  // Releases every block the group holds (its agents, prompt table, fork reserve).
  void FreeBlocks(RequestGroup* group);
  // Frees now what the group's finished agents hold (and, when every agent finished at the
  // fork before getting a table, the prompt and fork blocks); Schedule() does it for every
  // running group. The runtime calls it before counting free blocks for a synthesis pass.
  void ReleaseFinished(RequestGroup* group);
  // Blocks for a forward outside any request (the runtime's start-up calibration): up to `n`
  // fresh blocks, handed back with ReturnBlocks.
  std::vector<int32_t> LendBlocks(int n);
  void ReturnBlocks(const std::vector<int32_t>& blocks);
  // Groups admitted by the last Schedule() call.
  const std::vector<RequestGroup*>& admitted() const { return admitted_; }

  const std::vector<RequestGroup*>& waiting() const { return waiting_; }
  const std::vector<RequestGroup*>& running() const { return running_; }
  int running_agents() const;
  int64_t preemptions() const { return preemptions_; }

  // Orders groups: higher priority, then earlier deadline, then earlier arrival.
  static bool Before(const RequestGroup* a, const RequestGroup* b);
  // Agents of the group that still run (all N before the fork).
  static int LiveAgents(const RequestGroup& g);

 private:
  bool Admit(RequestGroup* g);
  // A drafted group whose only live agent is the SYNTHESIZE pass: its own blocks, no prompt.
  bool AdmitSynthesisOnly(RequestGroup* g, AgentSequence& synth);
  void AdmitWaiting();
  void Preempt(RequestGroup* g);
  bool GrowAgentTables();
  // Step 0 above, for one running group.
  void PublishPrompt(RequestGroup* g);
  void Fork(RequestGroup* g);
  // Drops one reference to each block of `table` and empties it.
  void UnrefAll(std::vector<int32_t>& table);

  SchedulerLimits limits_;
  BlockManager* blocks_;
  std::vector<RequestGroup*> waiting_, running_, admitted_;
  std::vector<std::pair<int32_t, int32_t>> copies_;  // for the plan being built
  int64_t preemptions_ = 0;
};

}  // namespace chorus
