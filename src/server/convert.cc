#include "convert.h"

namespace chorus::server {

namespace pb = ::chorus::v1;

grpc::Status ToGrpc(const absl::Status& s) {
  if (s.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()), std::string(s.message()));
}

pb::FinishReason ToProto(FinishReason r) {
  return static_cast<pb::FinishReason>(static_cast<int>(r));
}

void ToProto(const DraftResult& d, pb::Draft* out) {
  out->set_agent(d.agent);
  out->set_text(d.text);
  out->set_num_tokens(d.num_tokens);
  out->set_mean_logprob(d.num_tokens > 0 ? d.mean_logprob() : 0.0);
  out->set_finish_reason(ToProto(d.finish));
  out->set_answer(d.answer);
  out->set_confidence(d.confidence);
}

void ToProto(const GenerateResult& r, bool with_drafts, pb::GenerateResponse* out) {
  out->set_request_id(r.request_id);
  out->set_agents(r.agents);
  out->set_text(r.text);
  out->set_finish_reason(ToProto(r.finish));
  auto* m = out->mutable_merge();
  m->set_strategy(static_cast<pb::MergeStrategy>(static_cast<int>(r.merge.strategy)));
  m->set_winner(r.merge.winner);
  for (const auto& [answer, v] : r.merge.votes) (*m->mutable_votes())[answer] = v;
  if (with_drafts) {
    for (const auto& d : r.drafts) ToProto(d, out->add_drafts());
  }
  auto* u = out->mutable_usage();
  u->set_prompt_tokens(r.prompt_tokens);
  u->set_computed_prompt_tokens(r.computed_prompt_tokens);
  u->set_cached_prompt_tokens(r.cached_prompt_tokens);
  u->set_completion_tokens(r.completion_tokens);
  auto* t = out->mutable_timing();
  t->set_queue_ms(r.queue_ms);
  t->set_ttft_ms(r.ttft_ms);
  t->set_total_ms(r.total_ms);
  t->set_budget_ms(r.budget_ms);
  t->set_budget_cut(r.budget_cut);
}

GenerateInput FromProto(const pb::GenerateRequest& r) {
  GenerateInput in;
  in.request_id = r.request_id();
  in.prompt = r.prompt();
  for (const auto& m : r.messages()) {
    ChatMessage& out = in.messages.emplace_back(m.role(), m.content());
    if (m.has_reasoning_content()) out.reasoning_content = m.reasoning_content();
    for (const auto& c : m.tool_calls()) out.tool_calls.push_back({c.name(), c.arguments()});
  }
  if (r.has_chat_options()) {
    const auto& o = r.chat_options();
    if (o.has_add_generation_prompt()) in.chat.add_generation_prompt = o.add_generation_prompt();
    if (o.has_enable_thinking()) in.chat.enable_thinking = o.enable_thinking();
    in.chat.tools.assign(o.tools().begin(), o.tools().end());
  }
  in.max_tokens = r.max_tokens();
  in.stop.assign(r.stop().begin(), r.stop().end());
  in.has_sampling = r.has_sampling();
  const auto& s = r.sampling();
  in.temperature = s.temperature();
  in.top_p = s.top_p();
  in.top_k = s.top_k();
  in.min_p = s.min_p();
  in.seed = s.seed();
  in.repetition_penalty = s.repetition_penalty();
  in.presence_penalty = s.presence_penalty();
  in.frequency_penalty = s.frequency_penalty();
  const auto& q = r.reasoning();
  in.agents = q.agents();
  in.min_agents = q.min_agents();
  in.max_agents = q.max_agents();
  in.merge = q.merge();
  in.answer_regex = q.answer_regex();
  in.temperature_spread = q.temperature_spread();
  in.return_drafts = q.return_drafts();
  in.confidence_threshold = q.confidence_threshold();
  in.confidence_window = q.confidence_window();
  in.latency_budget_ms = r.latency_budget_ms();
  in.priority = r.priority();
  in.cache_salt = r.cache_salt();
  return in;
}

}  // namespace chorus::server
