// Events the runtime reports as they happen (for metrics). Implementations are thread-safe and
// cheap: the engine thread calls them inline.
#pragma once

#include <string_view>

namespace chorus {

class RuntimeObserver {
 public:
  virtual ~RuntimeObserver() = default;
  // One forward step of `rows` rows took `ms`.
  virtual void OnStep(int rows, double ms) = 0;
  // A request of `owner` (the caller's identity, "" without auth) ended with `status` ("ok",
  // "cancelled", "deadline_exceeded", ...). Timings are from arrival; ttft_ms < 0 when no
  // token was generated.
  virtual void OnRequestEnd(std::string_view owner, std::string_view status, double queue_ms,
                            double ttft_ms, double e2e_ms, int completion_tokens,
                            bool budget_cut) = 0;
  // An elastic request was given `agents` drafts (of at most `max_agents`) at submit.
  virtual void OnElasticChoice(int agents, int max_agents) {}
};

}  // namespace chorus
