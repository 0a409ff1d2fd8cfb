// The per-iteration decision for one request in flight, as a pure function of the clock
// (tests drive it with hand-built groups and numbers; the runtime carries it out):
// cancel it, shed it (never started within max_queue_delay_ms), fail it (its prefill can no
// longer finish in time), cut its drafts at the budget, or let it run. Then, once every draft
// has ended: start a synthesis pass when it fits, or complete.
#pragma once

#include "chorus/sequence/sequence.h"

namespace chorus {

enum class GroupAction {
  kContinue,   // keep running
  kCancel,     // the client cancelled: end CANCELLED
  kShed,       // waited past max_queue_delay_ms without starting: RESOURCE_EXHAUSTED
  kExpire,     // the prefill cannot finish before the deadline and there are no drafts
  kCutBudget,  // stop every draft now (FinishReason::kBudget) and merge what exists
};

struct GroupTiming {
  double next_step_ms = 0;     // predicted time of the next step (all running rows)
  double prefill_left_ms = 0;  // predicted time of the group's remaining prompt rows
  double one_row_step_ms = 0;  // predicted time of a one-row step
  double merge_reserve_ms = 5;
  double max_queue_delay_ms = 0;  // 0 = off
};

GroupAction DecideGroup(const RequestGroup& g, double now_ms, const GroupTiming& t);

// SYNTHESIZE: whether a pass of `pass_blocks` KV blocks, predicted at `prefill_ms` +
// `decode_ms`, fits the blocks free now and the group's deadline.
bool SynthesisFits(double now_ms, double deadline_ms, double prefill_ms, double decode_ms,
                   double merge_reserve_ms, int64_t pass_blocks, int64_t free_blocks);

}  // namespace chorus
