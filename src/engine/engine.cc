#include "chorus/engine/engine.h"

#include <algorithm>

namespace chorus {

absl::Status Engine::Step(const StepPlan& plan, StepOutput* out) {
  ForwardBatch& b = batch_;
  b.tokens.clear();
  b.positions.clear();
  b.seq_of_token.clear();
  b.logit_rows.clear();
  b.block_tables.clear();
  out->logit_segments.clear();
  out->sampled_segments.clear();
  out->logits.clear();
  out->sampled.clear();
  draws_.clear();
  host_rows_.clear();
  for (const auto& [src, dst] : plan.block_copies) executor_->CopyKvBlock(src, dst);
  if (plan.segments.empty()) return absl::OkStatus();
  size_t max_blocks = 1;
  for (const auto& s : plan.segments) {
    const auto& table = s.agent < 0 ? s.group->prompt_table : s.group->agents[s.agent].block_table;
    max_blocks = std::max(max_blocks, table.size());
  }
  b.max_blocks_per_seq = static_cast<int>(max_blocks);
  for (size_t i = 0; i < plan.segments.size(); ++i) {
    const StepSegment& s = plan.segments[i];
    const RequestGroup& g = *s.group;
    const auto& tokens = s.agent < 0 ? g.params.prompt_tokens : g.agents[s.agent].tokens;
    const auto& table = s.agent < 0 ? g.prompt_table : g.agents[s.agent].block_table;
    for (int p = s.start; p < s.start + s.len; ++p) {
      b.tokens.push_back(tokens[p]);
      b.positions.push_back(p);
      b.seq_of_token.push_back(static_cast<int32_t>(i));
    }
    if (s.logits) {
      const int32_t row = static_cast<int32_t>(b.logit_rows.size());
      b.logit_rows.push_back(static_cast<int32_t>(b.tokens.size()) - 1);
      Sampler* sampler = s.agent >= 0 ? g.agents[s.agent].sampler.get() : nullptr;
      if (sampler != nullptr && !sampler->penalized()) {
        draws_.push_back(sampler->NextRow(row));
        out->sampled_segments.push_back(static_cast<int>(i));
      } else {
        host_rows_.push_back(row);
        out->logit_segments.push_back(static_cast<int>(i));
      }
    }
    b.block_tables.insert(b.block_tables.end(), table.begin(), table.end());
    b.block_tables.resize((i + 1) * max_blocks, -1);
  }
  return executor_->ForwardSampled(b, draws_, host_rows_, &out->logits, &out->sampled);
}

}  // namespace chorus
