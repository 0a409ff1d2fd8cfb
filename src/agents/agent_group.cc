#include "chorus/agents/agent_group.h"

#include <algorithm>

#include "chorus/agents/merge.h"
#include "chorus/agents/stop_matcher.h"
#include "chorus/core/status.h"

namespace chorus {
namespace {

size_t MaxStopLength(const RequestGroup& g) {
  size_t n = 0;
  for (const auto& s : g.params.stop) n = std::max(n, s.size());
  return n;
}

// Sends the agent's text not yet streamed, keeping back what could still become a stop
// string (unless final), and never cutting a UTF-8 sequence.
void EmitDelta(RequestGroup& g, AgentSequence& a, bool final) {
  if (!g.params.stream) return;
  const std::string& text = a.draft.text;
  size_t end = text.size();
  if (!final) {
    const size_t hold = MaxStopLength(g) > 0 ? MaxStopLength(g) - 1 : 0;
    end = end > hold ? end - hold : 0;
    while (end > a.streamed && end < text.size() &&
           (static_cast<uint8_t>(text[end]) & 0xc0) == 0x80) {
      --end;
    }
  }
  if (end > a.streamed) {
    g.sink->OnDelta(a.index, std::string_view(text).substr(a.streamed, end - a.streamed));
    a.streamed = end;
  }
}

float AgentTemperature(const GenerateParams& p, int i) {
  const int n = p.reasoning.agents;
  const float spread = p.reasoning.temperature_spread;
  if (n <= 1 || spread == 0) return p.sampling.temperature;
  const float offset = static_cast<float>(i) / static_cast<float>(n - 1) - 0.5f;
  return std::max(0.0f, p.sampling.temperature * (1.0f + spread * offset));
}

// The low-confidence stop leaves at least two other drafts that can answer (running, or
// finished with an answer the merge counts; one when the request has only two drafts), so the
// vote keeps voters on hard questions where even right drafts have unsure tokens, and never
// ends the last draft that could answer. (On the arith model, 8 agents, threshold 0.6, window
// 1: keeping 2 saved 29-35% of the tokens at +0.5..+6 points; keeping 1 lost 2 points on one
// seed: docs/EVAL.md.)
bool OtherDraftsCanAnswer(const RequestGroup& g, const AgentSequence& a) {
  const int others = static_cast<int>(g.agents.size()) - 1;
  const int need = std::max(1, std::min(2, others));
  int n = 0;
  for (const auto& o : g.agents) {
    if (&o != &a && (!o.finished() || o.has_answer)) ++n;
  }
  return n >= need;
}

void ApplyToken(RequestGroup& g, AgentSequence& a, const SampledToken& t, const AgentContext& ctx) {
  if (g.first_token_ms < 0) g.first_token_ms = ctx.clock->NowMs();
  if (ctx.tokenizer->IsEndOfGeneration(t.token)) {
    FinishAgent(g, a, FinishReason::kEndOfText, ctx);
    return;
  }
  a.tokens.push_back(t.token);
  DraftResult& d = a.draft;
  d.num_tokens++;
  d.sum_logprob += t.logprob;
  d.logprobs.push_back(t.logprob);
  std::string bytes = ctx.tokenizer->TokenToBytes(t.token);
  if (d.num_tokens == 1 && g.params.strip_leading_space && !bytes.empty() && bytes[0] == ' ') {
    bytes.erase(0, 1);
  }
  const size_t before = d.text.size();
  d.text += a.utf8.Push(bytes);
  // Stop strings: only the new bytes are fed, the automaton remembers partial matches.
  if (g.stop_matcher != nullptr && d.text.size() > before) {
    const size_t hit =
        g.stop_matcher->Feed(a.stop_state, std::string_view(d.text).substr(before), before);
    if (hit != std::string::npos) {
      d.text.resize(hit);
      a.utf8 = Utf8Stream();
      FinishAgent(g, a, FinishReason::kStop, ctx);
      return;
    }
  }
  const ReasoningParams& r = g.params.reasoning;
  if (d.num_tokens >= g.params.max_tokens) {
    FinishAgent(g, a, FinishReason::kLength, ctx);
  } else if (static_cast<int>(a.tokens.size()) >= ctx.context_length) {
    FinishAgent(g, a, FinishReason::kContext, ctx);
  } else if (r.merge == MergeStrategy::kConfidence && d.num_tokens >= r.confidence_window &&
             std::exp(TailWindowMeanLogprob(d.logprobs, r.confidence_window)) <
                 r.confidence_threshold &&
             OtherDraftsCanAnswer(g, a)) {
    FinishAgent(g, a, FinishReason::kLowConfidence, ctx);
  } else {
    EmitDelta(g, a, /*final=*/false);
  }
}

}  // namespace

void ForkAgents(RequestGroup& g, const float* logits, const AgentContext& ctx) {
  const GenerateParams& p = g.params;
  const int n = p.reasoning.agents;
  const int plen = static_cast<int>(p.prompt_tokens.size());
  if (!p.stop.empty() && g.stop_matcher == nullptr) {
    g.stop_matcher = std::make_shared<const StopMatcher>(p.stop);
  }
  if (!g.forked) {
    g.agents.resize(n);
    for (int i = 0; i < n; ++i) {
      AgentSequence& a = g.agents[i];
      a.index = i;
      a.draft.agent = i;
      a.tokens = p.prompt_tokens;
      SamplingParams sp = p.sampling;
      sp.seed = p.sampling.seed + static_cast<uint64_t>(i);
      sp.temperature = AgentTemperature(p, i);
      a.sampler = std::make_unique<Sampler>(sp);
    }
    g.forked = true;
  }
  // The scheduler gives the agents their block tables before the next step.
  for (auto& a : g.agents) {
    if (a.finished() || a.index == g.synth_agent) continue;
    a.computed = plen;
  }
  g.fork_pending = true;
  g.state = GroupState::kDecode;

  std::span<const float> l(logits, ctx.vocab_size);
  for (auto& a : g.agents) {
    if (a.finished() || a.index == g.synth_agent || static_cast<int>(a.tokens.size()) > plen)
      continue;
    ApplyToken(g, a, a.sampler->Sample(l, a.tokens), ctx);
  }
}

void SampleNext(RequestGroup& g, int agent, const float* logits, const AgentContext& ctx) {
  AgentSequence& a = g.agents[agent];
  if (a.finished()) return;
  ApplyToken(g, a, a.sampler->Sample(std::span<const float>(logits, ctx.vocab_size), a.tokens),
             ctx);
}

void ApplySampled(RequestGroup& g, int agent, const SampledToken& token, const AgentContext& ctx) {
  AgentSequence& a = g.agents[agent];
  if (a.finished()) return;
  ApplyToken(g, a, token, ctx);
}

void FinishAgent(RequestGroup& g, AgentSequence& a, FinishReason reason, const AgentContext& ctx) {
  if (a.finished()) return;
  a.draft.text += a.utf8.Flush();
  a.draft.finish = reason;
  a.draft.finish_ms = ctx.clock->NowMs();
  const re2::RE2* re = g.params.reasoning.answer_re.get();
  a.has_answer = a.draft.num_tokens > 0 && reason != FinishReason::kLowConfidence &&
                 HasAnswer(a.draft.text, re);
  if (g.params.reasoning.merge == MergeStrategy::kVote && a.draft.num_tokens > 0) {
    // Extracted once here; the per-step consensus check reads it instead of re-running the regex.
    a.draft.answer = ExtractAnswer(a.draft.text, re);
  }
  EmitDelta(g, a, /*final=*/true);
  g.sink->OnAgentFinished(a.draft);
}

void ApplyEarlyStops(RequestGroup& g, const AgentContext& ctx) {
  const ReasoningParams& r = g.params.reasoning;
  int unfinished = 0;
  std::vector<std::string> answers;
  bool natural_finish = false;
  for (const auto& a : g.agents) {
    if (!a.finished()) {
      ++unfinished;
    } else if (a.has_answer) {  // what the merge will count
      answers.push_back(a.draft.answer);
      natural_finish |= a.draft.finish == FinishReason::kEndOfText ||
                        a.draft.finish == FinishReason::kStop ||
                        a.draft.finish == FinishReason::kLength;
    }
  }
  if (unfinished == 0) return;
  const bool stop = (r.merge == MergeStrategy::kFirst && natural_finish) ||
                    (r.merge == MergeStrategy::kVote && r.agents > 1 && !answers.empty() &&
                     VoteIsDecided(answers, unfinished));
  if (!stop) return;
  for (auto& a : g.agents) {
    if (!a.finished()) FinishAgent(g, a, FinishReason::kConsensus, ctx);
  }
}

bool AllAgentsFinished(const RequestGroup& g) {
  if (!g.forked) return false;
  for (const auto& a : g.agents) {
    if (!a.finished()) return false;
  }
  return true;
}

std::vector<int32_t> SynthesisPrompt(const RequestGroup& g, const AgentContext& ctx) {
  // The request's own tokens verbatim (a chat template's special tokens stay special tokens,
  // and the model continues in the turn the request opened), then the drafts as plain text.
  std::string text = "\n\nCandidate answers:\n";
  int n = 0;
  for (const auto& a : g.agents) {
    if (a.draft.num_tokens == 0) continue;
    text += std::to_string(++n) + ". " + a.draft.text + "\n";
  }
  text += "\nFinal answer:";
  if (n == 0) return {};
  std::vector<int32_t> ids = g.params.prompt_tokens;
  const std::vector<int32_t> tail =
      ctx.tokenizer->Encode(text, /*add_special=*/false, /*parse_special=*/false);
  ids.insert(ids.end(), tail.begin(), tail.end());
  if (static_cast<int64_t>(ids.size()) + g.params.max_tokens > ctx.context_length) return {};
  return ids;
}

void StartSynthesis(RequestGroup& g, std::vector<int32_t> prompt) {
  AgentSequence a;
  a.index = static_cast<int>(g.agents.size());
  a.draft.agent = a.index;
  a.tokens = std::move(prompt);
  a.computed = 0;
  SamplingParams sp;
  sp.temperature = 0;  // the synthesizer writes the most likely answer
  a.sampler = std::make_unique<Sampler>(sp);
  g.synth_agent = a.index;
  g.agents.push_back(std::move(a));
  g.state = GroupState::kDecode;
}

GenerateResult BuildResult(RequestGroup& g, double now_ms) {
  GenerateResult r;
  const GenerateParams& p = g.params;
  r.request_id = p.request_id;
  r.agents = p.reasoning.agents;
  for (const auto& a : g.agents) {
    if (a.index != g.synth_agent) r.drafts.push_back(a.draft);
    r.completion_tokens += a.draft.num_tokens;
  }
  r.merge = MergeDrafts(p.reasoning.merge, p.reasoning, r.drafts);
  for (const auto& d : r.drafts) {
    if (d.agent == r.merge.winner) {
      r.text = d.text;
      r.finish = d.finish;
    }
  }
  // The synthesized answer wins if the pass ended on its own; cut short, the vote stands.
  const DraftResult* synth = g.synth_agent >= 0 ? &g.agents[g.synth_agent].draft : nullptr;
  if (synth && synth->num_tokens > 0 &&
      (synth->finish == FinishReason::kEndOfText || synth->finish == FinishReason::kStop ||
       synth->finish == FinishReason::kLength)) {
    const DraftResult& s = *synth;
    r.text = s.text;
    r.finish = s.finish;
    r.merge.strategy = MergeStrategy::kSynthesize;
    r.merge.winner = -1;
  }
  r.prompt_tokens = static_cast<int>(p.prompt_tokens.size());
  r.computed_prompt_tokens = g.computed_prompt_tokens;
  r.cached_prompt_tokens = g.cached_prompt_tokens;
  r.queue_ms =
      g.first_scheduled_ms >= 0 ? g.first_scheduled_ms - p.arrival_ms : now_ms - p.arrival_ms;
  r.ttft_ms = g.first_token_ms >= 0 ? g.first_token_ms - p.arrival_ms : 0;
  r.total_ms = now_ms - p.arrival_ms;
  r.budget_ms = p.deadline_ms - p.arrival_ms;
  r.budget_cut = g.budget_cut;
  return r;
}

}  // namespace chorus
