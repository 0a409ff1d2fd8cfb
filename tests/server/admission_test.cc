// A table of bad requests over gRPC: each gets INVALID_ARGUMENT (or RESOURCE_EXHAUSTED /
// DEADLINE_EXCEEDED) naming the field, and the daemon keeps serving.
#include "server_fixture.h"

namespace chorus {
namespace {

using testing::ServerTest;
namespace pb = chorus::v1;

struct BadCase {
  const char* name;
  std::function<void(pb::GenerateRequest&)> edit;
  grpc::StatusCode code;
  const char* field;  // must appear in the message
};

class AdmissionServerTest : public ServerTest {
 protected:
  void Configure(pb::ServerConfig& c) override {
    c.set_max_tokens_limit(1024);
    c.set_max_prompt_bytes(4096);
  }
};

TEST_F(AdmissionServerTest, EveryBadRequestIsRejectedNamingTheFieldAndServingContinues) {
  const std::vector<BadCase> cases = {
      {"temperature negative", [](auto& r) { r.mutable_sampling()->set_temperature(-1); },
       grpc::INVALID_ARGUMENT, "sampling.temperature"},
      {"temperature huge", [](auto& r) { r.mutable_sampling()->set_temperature(999999); },
       grpc::INVALID_ARGUMENT, "sampling.temperature"},
      {"temperature NaN", [](auto& r) { r.mutable_sampling()->set_temperature(NAN); },
       grpc::INVALID_ARGUMENT, "sampling.temperature"},
      // Issue 11, finding 9: divisors small enough to overflow the logits.
      {"temperature tiny", [](auto& r) { r.mutable_sampling()->set_temperature(1e-30f); },
       grpc::INVALID_ARGUMENT, "sampling.temperature"},
      {"repetition penalty tiny",
       [](auto& r) { r.mutable_sampling()->set_repetition_penalty(1e-30f); },
       grpc::INVALID_ARGUMENT, "sampling.repetition_penalty"},
      {"top_p negative", [](auto& r) { r.mutable_sampling()->set_top_p(-1); },
       grpc::INVALID_ARGUMENT, "sampling.top_p"},
      {"top_p above 1", [](auto& r) { r.mutable_sampling()->set_top_p(1.5f); },
       grpc::INVALID_ARGUMENT, "sampling.top_p"},
      {"top_k negative", [](auto& r) { r.mutable_sampling()->set_top_k(-5); },
       grpc::INVALID_ARGUMENT, "sampling.top_k"},
      {"top_k huge", [](auto& r) { r.mutable_sampling()->set_top_k(1 << 30); },
       grpc::INVALID_ARGUMENT, "sampling.top_k"},
      {"min_p above 1", [](auto& r) { r.mutable_sampling()->set_min_p(2); }, grpc::INVALID_ARGUMENT,
       "sampling.min_p"},
      {"repetition penalty", [](auto& r) { r.mutable_sampling()->set_repetition_penalty(-3); },
       grpc::INVALID_ARGUMENT, "sampling.repetition_penalty"},
      {"presence penalty", [](auto& r) { r.mutable_sampling()->set_presence_penalty(5); },
       grpc::INVALID_ARGUMENT, "sampling.presence_penalty"},
      {"frequency penalty", [](auto& r) { r.mutable_sampling()->set_frequency_penalty(-5); },
       grpc::INVALID_ARGUMENT, "sampling.frequency_penalty"},
      {"max_tokens negative", [](auto& r) { r.set_max_tokens(-1); }, grpc::INVALID_ARGUMENT,
       "max_tokens"},
      {"max_tokens over limit", [](auto& r) { r.set_max_tokens(1025); }, grpc::INVALID_ARGUMENT,
       "max_tokens"},
      {"agents negative", [](auto& r) { r.mutable_reasoning()->set_agents(-2); },
       grpc::INVALID_ARGUMENT, "reasoning.agents"},
      {"agents over limit", [](auto& r) { r.mutable_reasoning()->set_agents(17); },
       grpc::INVALID_ARGUMENT, "reasoning.agents"},
      {"unknown merge",
       [](auto& r) { r.mutable_reasoning()->set_merge(static_cast<pb::MergeStrategy>(42)); },
       grpc::INVALID_ARGUMENT, "reasoning.merge"},
      {"bad regex", [](auto& r) { r.mutable_reasoning()->set_answer_regex("(unclosed"); },
       grpc::INVALID_ARGUMENT, "reasoning.answer_regex"},
      {"long regex",
       [](auto& r) { r.mutable_reasoning()->set_answer_regex(std::string(600, 'a')); },
       grpc::INVALID_ARGUMENT, "reasoning.answer_regex"},
      {"regex program too big",
       [](auto& r) { r.mutable_reasoning()->set_answer_regex("[a-z]{1000}"); },
       grpc::INVALID_ARGUMENT, "reasoning.answer_regex"},
      {"spread above 1", [](auto& r) { r.mutable_reasoning()->set_temperature_spread(3); },
       grpc::INVALID_ARGUMENT, "reasoning.temperature_spread"},
      {"confidence threshold",
       [](auto& r) { r.mutable_reasoning()->set_confidence_threshold(1.5f); },
       grpc::INVALID_ARGUMENT, "reasoning.confidence_threshold"},
      {"confidence window", [](auto& r) { r.mutable_reasoning()->set_confidence_window(99999); },
       grpc::INVALID_ARGUMENT, "reasoning.confidence_window"},
      {"too many stops",
       [](auto& r) {
         for (int i = 0; i < 9; ++i) r.add_stop("x");
       },
       grpc::INVALID_ARGUMENT, "stop"},
      {"empty stop", [](auto& r) { r.add_stop(""); }, grpc::INVALID_ARGUMENT, "stop"},
      {"priority", [](auto& r) { r.set_priority(1000); }, grpc::INVALID_ARGUMENT, "priority"},
      {"budget negative", [](auto& r) { r.set_latency_budget_ms(-5); }, grpc::INVALID_ARGUMENT,
       "latency_budget_ms"},
      {"bad request id", [](auto& r) { r.set_request_id("no spaces allowed"); },
       grpc::INVALID_ARGUMENT, "request_id"},
      {"long request id", [](auto& r) { r.set_request_id(std::string(200, 'a')); },
       grpc::INVALID_ARGUMENT, "request_id"},
      {"prompt too big", [](auto& r) { r.set_prompt(std::string(5000, 'a')); },
       grpc::INVALID_ARGUMENT, "prompt"},
      {"prompt and messages",
       [](auto& r) {
         auto* m = r.add_messages();
         m->set_role("user");
         m->set_content("hi");
       },
       grpc::INVALID_ARGUMENT, "messages"},
      {"no chat template",
       [](auto& r) {
         r.clear_prompt();
         auto* m = r.add_messages();
         m->set_role("user");
         m->set_content("hi");
       },
       grpc::INVALID_ARGUMENT, "messages"},
      {"bad role",
       [](auto& r) {
         r.clear_prompt();
         auto* m = r.add_messages();
         m->set_role("wizard");
         m->set_content("hi");
       },
       grpc::INVALID_ARGUMENT, "messages[0].role"},
      {"prompt past context",
       [](auto& r) {
         std::string p;
         for (int i = 0; i < 1000; ++i) p += "\xe4\xb8\xad";
         r.set_prompt(p.substr(0, 3000));
         r.set_max_tokens(1024);
       },
       grpc::INVALID_ARGUMENT, "context length"},
      {"agents x tokens past KV",
       [](auto& r) {
         r.set_max_tokens(1024);
         r.mutable_reasoning()->set_agents(16);
       },
       grpc::INVALID_ARGUMENT, "KV blocks"},
      {"budget below prefill",
       [](auto& r) {
         r.set_latency_budget_ms(1);
         r.set_prompt(std::string(2000, 'a'));
       },
       grpc::DEADLINE_EXCEEDED, "latency budget"},
  };
  ASSERT_GE(cases.size(), 20u);
  for (const auto& c : cases) {
    pb::GenerateRequest r;
    r.set_prompt("Once upon a time");
    r.set_max_tokens(8);
    c.edit(r);
    pb::GenerateResponse resp;
    const grpc::Status s = Generate(r, &resp);
    EXPECT_EQ(s.error_code(), c.code) << c.name << ": " << s.error_message();
    EXPECT_NE(s.error_message().find(c.field), std::string::npos)
        << c.name << ": '" << s.error_message() << "' does not name " << c.field;
  }
  // Still serving.
  pb::GenerateRequest ok;
  ok.set_prompt("Once upon a time");
  ok.set_max_tokens(8);
  pb::GenerateResponse resp;
  EXPECT_TRUE(Generate(ok, &resp).ok());
  EXPECT_EQ(resp.usage().completion_tokens() > 0, true);
}

// A model whose chat template is plain ChatML (named by the config): roles and fields that
// template cannot render are refused naming the message, not dropped.
class ChatMlServerTest : public ServerTest {
 protected:
  void Configure(pb::ServerConfig& c) override { c.set_chat_template("chatml"); }
};

TEST_F(ChatMlServerTest, ToolRolesCallsAndListsAreRefusedWhereTheTemplateHasNone) {
  auto chat = [](const char* role) {
    pb::GenerateRequest r;
    r.set_max_tokens(4);
    auto* u = r.add_messages();
    u->set_role("user");
    u->set_content("hi");
    auto* m = r.add_messages();
    m->set_role(role);
    m->set_content("x");
    return r;
  };
  pb::GenerateResponse resp;
  grpc::Status s = Generate(chat("tool"), &resp);
  EXPECT_EQ(s.error_code(), grpc::INVALID_ARGUMENT);
  EXPECT_NE(s.error_message().find("messages[1].role"), std::string::npos) << s.error_message();
  pb::GenerateRequest calls = chat("assistant");
  calls.mutable_messages(1)->add_tool_calls()->set_name("f");
  s = Generate(calls, &resp);
  EXPECT_EQ(s.error_code(), grpc::INVALID_ARGUMENT);
  EXPECT_NE(s.error_message().find("messages[1].tool_calls"), std::string::npos)
      << s.error_message();
  pb::GenerateRequest tools = chat("assistant");
  tools.mutable_chat_options()->add_tools(R"({"type": "function"})");
  s = Generate(tools, &resp);
  EXPECT_EQ(s.error_code(), grpc::INVALID_ARGUMENT);
  EXPECT_NE(s.error_message().find("chat_options.tools"), std::string::npos) << s.error_message();
  // What ChatML has works, and add_generation_prompt=false is accepted.
  pb::GenerateRequest ok = chat("assistant");
  ok.mutable_chat_options()->set_add_generation_prompt(false);
  s = Generate(ok, &resp);
  EXPECT_TRUE(s.ok()) << s.error_message();
}

class QueueLimitServerTest : public ServerTest {
 protected:
  void Configure(pb::ServerConfig& c) override {
    c.set_max_queued_requests(1);
    c.set_max_running_agents(1);
    c.set_max_agents_per_request(1);
  }
};

TEST_F(QueueLimitServerTest, AFullQueueAnswersResourceExhausted) {
  // One running (long) + one queued fill the server; a third is refused at once.
  std::vector<std::thread> threads;
  std::vector<grpc::Status> st(2);
  for (int i = 0; i < 2; ++i) {
    threads.emplace_back([&, i] {
      pb::GenerateRequest r;
      r.set_prompt("Once upon a time");
      r.set_max_tokens(1500);
      pb::GenerateResponse resp;
      st[i] = Generate(r, &resp);
    });
    for (int k = 0; k < 1000; ++k) {
      const auto s = Stats();
      if (s.running_requests() + s.waiting_requests() > i) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }
  pb::GenerateRequest r;
  r.set_prompt("hello");
  r.set_max_tokens(4);
  pb::GenerateResponse resp;
  const grpc::Status s = Generate(r, &resp);
  EXPECT_EQ(s.error_code(), grpc::RESOURCE_EXHAUSTED) << s.error_message();
  EXPECT_NE(s.error_message().find("max_queued_requests"), std::string::npos);
  for (auto& t : threads) t.join();
  EXPECT_TRUE(st[0].ok());
  EXPECT_TRUE(st[1].ok());
}

// Issue 11, finding 7: the queue checks come before the prompt is tokenized, so a server that
// cannot queue refuses even a large prompt at once (it used to tokenize it first, then answer
// INVALID_ARGUMENT about the context length).
class NoQueueServerTest : public ServerTest {
 protected:
  void Configure(pb::ServerConfig& c) override { c.set_max_queued_requests(0); }
};

TEST_F(NoQueueServerTest, AFullQueueRefusesBeforeTokenizing) {
  std::string prompt;
  for (int i = 0; i < 1000; ++i) prompt += "\xe4\xb8\xad";  // thousands of tokens
  pb::GenerateRequest r;
  r.set_prompt(prompt);
  r.set_max_tokens(1024);
  pb::GenerateResponse resp;
  const grpc::Status s = Generate(r, &resp);
  EXPECT_EQ(s.error_code(), grpc::RESOURCE_EXHAUSTED) << s.error_message();
  EXPECT_NE(s.error_message().find("max_queued_requests"), std::string::npos) << s.error_message();
}

}  // namespace
}  // namespace chorus
