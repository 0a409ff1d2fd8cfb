#include "chorus/runtime/group_policy.h"

#include "chorus/agents/budget.h"

namespace chorus {

GroupAction DecideGroup(const RequestGroup& g, double now, const GroupTiming& t) {
  if (g.cancelled || (g.sink != nullptr && g.sink->Cancelled())) return GroupAction::kCancel;
  const GenerateParams& p = g.params;
  if (g.state == GroupState::kDecode) {
    return ShouldStopDrafting(now, p.deadline_ms, t.next_step_ms, t.merge_reserve_ms)
               ? GroupAction::kCutBudget
               : GroupAction::kContinue;
  }
  // Never scheduled and waited too long: shed (the server is at capacity).
  if (g.first_scheduled_ms < 0 && t.max_queue_delay_ms > 0 &&
      now - p.arrival_ms > t.max_queue_delay_ms) {
    return GroupAction::kShed;
  }
  // Waiting or prefilling: can the prefill still finish in time?
  if (PrefillFits(now, p.deadline_ms, t.prefill_left_ms, t.one_row_step_ms, t.merge_reserve_ms)) {
    return GroupAction::kContinue;
  }
  // No drafts yet: nothing to merge. Preempted after drafting: merge what exists.
  return g.forked ? GroupAction::kCutBudget : GroupAction::kExpire;
}

bool SynthesisFits(double now_ms, double deadline_ms, double prefill_ms, double decode_ms,
                   double merge_reserve_ms, int64_t pass_blocks, int64_t free_blocks) {
  return pass_blocks <= free_blocks &&
         PrefillFits(now_ms, deadline_ms, prefill_ms, decode_ms, merge_reserve_ms);
}

}  // namespace chorus
