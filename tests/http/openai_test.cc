// The OpenAI wire format (src/http/openai.cc) without sockets: field types and names, the two
// request modes, error mapping, response and SSE shapes (parsed back with nlohmann::json).
#include "chorus/http/openai.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

namespace chorus::http {
namespace {

using json = nlohmann::json;

ApiError ParseError(const std::string& body, Endpoint ep = Endpoint::kCompletions) {
  OpenAiRequest r;
  ApiError e;
  EXPECT_FALSE(ParseRequest(body, ep, 16, &r, &e)) << body;
  return e;
}

OpenAiRequest Parse(const std::string& body, Endpoint ep = Endpoint::kCompletions) {
  OpenAiRequest r;
  ApiError e;
  EXPECT_TRUE(ParseRequest(body, ep, 16, &r, &e)) << body << " -> " << e.message;
  return r;
}

TEST(OpenAiParse, PlainCompletionMapsEveryField) {
  OpenAiRequest r =
      Parse(R"({"model":"m","prompt":"hi","max_tokens":7,"temperature":0.5,"top_p":0.9,
    "seed":42,"stop":["a","b"],"presence_penalty":0.1,"frequency_penalty":-0.2,"n":3,"user":"x","unknown":{"y":1}})");
  EXPECT_EQ(r.model, "m");
  EXPECT_EQ(r.input.prompt, "hi");
  EXPECT_EQ(r.input.max_tokens, 7);
  EXPECT_FLOAT_EQ(r.input.temperature, 0.5f);
  EXPECT_FLOAT_EQ(r.input.top_p, 0.9f);
  EXPECT_EQ(r.input.seed, 42u);
  EXPECT_EQ(r.input.stop, (std::vector<std::string>{"a", "b"}));
  EXPECT_FLOAT_EQ(r.input.presence_penalty, 0.1f);
  EXPECT_FLOAT_EQ(r.input.frequency_penalty, -0.2f);
  // n independent choices: n agents, every draft returned, no vote (no early stop).
  EXPECT_EQ(r.n, 3);
  EXPECT_FALSE(r.merged);
  EXPECT_EQ(r.input.agents, 3);
  EXPECT_EQ(r.input.merge, 3);
  EXPECT_TRUE(r.input.return_drafts);
}

TEST(OpenAiParse, ChatMessagesAndMaxCompletionTokens) {
  OpenAiRequest r = Parse(R"({"model":"m","messages":[{"role":"developer","content":"be brief"},
    {"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]},
    {"role":"assistant","content":null}],"max_tokens":5,"max_completion_tokens":9})",
                          Endpoint::kChat);
  ASSERT_EQ(r.input.messages.size(), 3u);
  EXPECT_EQ(r.input.messages[0].role, "system");
  EXPECT_EQ(r.input.messages[1].content, "ab");
  EXPECT_EQ(r.input.messages[2].content, "");
  EXPECT_EQ(r.input.max_tokens, 9);
}

// Tool results, tool calls (object arguments rewritten as the template's tojson writes them,
// string arguments kept), reasoning_content, the tools list and the template options.
TEST(OpenAiParse, ToolsReasoningAndTemplateOptions) {
  OpenAiRequest r = Parse(R"({"model":"m","messages":[{"role":"user","content":"weather?"},
    {"role":"assistant","content":null,"reasoning_content":"call it","tool_calls":[
      {"id":"c1","type":"function","function":{"name":"get_weather","arguments":{"unit":"c","city":"Paris","n":[1,2.0,"\u00e9\n"]}}},
      {"id":"c2","type":"function","function":{"name":"now","arguments":"{\"tz\":\"UTC\"}"}}]},
    {"role":"tool","tool_call_id":"c1","content":"18"}],
    "tools":[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object","b":true,"a":null}}}],
    "tool_choice":"auto","chat_template_kwargs":{"enable_thinking":false},"add_generation_prompt":true})",
                          Endpoint::kChat);
  ASSERT_EQ(r.input.messages.size(), 3u);
  const ChatMessage& a = r.input.messages[1];
  ASSERT_TRUE(a.reasoning_content.has_value());
  EXPECT_EQ(*a.reasoning_content, "call it");
  ASSERT_EQ(a.tool_calls.size(), 2u);
  EXPECT_EQ(a.tool_calls[0].name, "get_weather");
  // Python's json.dumps: keys in the client's order, ", " and ": ", 2.0 stays 2.0, non-ASCII kept.
  EXPECT_EQ(a.tool_calls[0].arguments,
            "{\"unit\": \"c\", \"city\": \"Paris\", \"n\": [1, 2.0, \"\xc3\xa9\\n\"]}");
  EXPECT_EQ(a.tool_calls[1].arguments, "{\"tz\":\"UTC\"}");
  EXPECT_EQ(r.input.messages[2].role, "tool");
  ASSERT_EQ(r.input.chat.tools.size(), 1u);
  EXPECT_EQ(r.input.chat.tools[0],
            "{\"type\": \"function\", \"function\": {\"name\": \"get_weather\", \"parameters\": "
            "{\"type\": \"object\", \"b\": true, \"a\": null}}}");
  ASSERT_TRUE(r.input.chat.enable_thinking.has_value());
  EXPECT_FALSE(*r.input.chat.enable_thinking);
  EXPECT_TRUE(r.input.chat.add_generation_prompt);
  // tool_choice "none": the tools are not shown to the model.
  OpenAiRequest none = Parse(R"({"model":"m","messages":[{"role":"user","content":"a"}],
    "tools":[{"type":"function","function":{"name":"f"}}],"tool_choice":"none"})",
                             Endpoint::kChat);
  EXPECT_TRUE(none.input.chat.tools.empty());
}

TEST(OpenAiParse, PythonStyleJsonEscapesLikeJsonDumps) {
  std::string out;
  ASSERT_TRUE(ToPythonStyleJson(
      R"({"q":"a\"b\\c\t\u0001","e":[],"o":{},"f":-0.5,"big":1e300,"i":-3})", &out));
  EXPECT_EQ(out,
            R"({"q": "a\"b\\c\t\u0001", "e": [], "o": {}, "f": -0.5, "big": 1e+300, "i": -3})");
  EXPECT_FALSE(ToPythonStyleJson("{not json", &out));
  ASSERT_TRUE(ToPythonStyleJson("[-0.0, 3.0, 0.25]", &out));
  EXPECT_EQ(out, "[-0.0, 3.0, 0.25]");
}

// A body nested far deeper than any request needs is refused, not recursed into (dumping or
// copying it would overflow the HTTP thread's stack).
TEST(OpenAiParse, DeeplyNestedBodiesAreRefused) {
  const int kDepth = 200000;
  const std::string deep = std::string(kDepth, '[') + std::string(kDepth, ']');
  EXPECT_EQ(ParseError(R"({"model":"m","messages":[{"role":"user","content":"a"}],"tools":[{"p":)" +
                           deep + "}]}",
                       Endpoint::kChat)
                .param,
            "body");
  std::string out;
  EXPECT_FALSE(ToPythonStyleJson(deep, &out));
  // 64 levels are fine.
  EXPECT_TRUE(ToPythonStyleJson(std::string(60, '[') + std::string(60, ']'), &out));
}

TEST(OpenAiParse, ChorusExtensionMergesIntoOneChoice) {
  OpenAiRequest r = Parse(R"j({"model":"m","prompt":"q","chorus":{"agents":8,"merge":"CONFIDENCE",
    "latency_budget_ms":800,"answer_regex":"answer: (\\d+)","return_drafts":true,"priority":3}})j");
  EXPECT_TRUE(r.merged);
  EXPECT_EQ(r.input.agents, 8);
  EXPECT_EQ(r.input.merge, 2);
  EXPECT_EQ(r.input.latency_budget_ms, 800);
  EXPECT_EQ(r.input.answer_regex, "answer: (\\d+)");
  EXPECT_TRUE(r.input.return_drafts);
  EXPECT_EQ(r.input.priority, 3);
}

TEST(OpenAiParse, SeedZeroIsStillDeterministic) {
  EXPECT_NE(Parse(R"({"model":"m","prompt":"q","seed":0})").input.seed, 0u);
  EXPECT_EQ(Parse(R"({"model":"m","prompt":"q"})").input.seed, 0u);  // absent: from the request id
}

TEST(OpenAiParse, WrongTypesNameTheParameter) {
  EXPECT_EQ(ParseError(R"({"model":"m","prompt":"q","temperature":"hot"})").param, "temperature");
  EXPECT_EQ(ParseError(R"({"model":"m","prompt":"q","max_tokens":1.5})").param, "max_tokens");
  EXPECT_EQ(ParseError(R"({"model":"m","prompt":"q","stop":[1]})").param, "stop");
  EXPECT_EQ(ParseError(R"({"model":"m","prompt":"q","stream":"yes"})").param, "stream");
  EXPECT_EQ(ParseError(R"({"model":"m","prompt":"q","stream_options":{"include_usage":1}})").param,
            "stream_options.include_usage");
  EXPECT_EQ(ParseError(R"({"model":"m","prompt":"q","chorus":{"agents":"many"}})").param,
            "chorus.agents");
  EXPECT_EQ(ParseError(R"({"model":"m","prompt":"q","chorus":{"merge":"majority"}})").param,
            "chorus.merge");
  EXPECT_EQ(ParseError(R"({"model":"m","prompt":"q","chorus":[]})").param, "chorus");
  EXPECT_EQ(
      ParseError(R"({"model":"m","messages":[{"role":"wizard","content":"x"}]})", Endpoint::kChat)
          .param,
      "messages[0].role");
  EXPECT_EQ(
      ParseError(
          R"({"model":"m","messages":[{"role":"assistant","content":"","tool_calls":[{"function":{"arguments":"{}"}}]}]})",
          Endpoint::kChat)
          .param,
      "messages[0].tool_calls[0].function.name");
  EXPECT_EQ(
      ParseError(
          R"({"model":"m","messages":[{"role":"assistant","content":"","tool_calls":[{"function":{"name":"f","arguments":3}}]}]})",
          Endpoint::kChat)
          .param,
      "messages[0].tool_calls[0].function.arguments");
  EXPECT_EQ(
      ParseError(
          R"({"model":"m","messages":[{"role":"assistant","content":"a","reasoning_content":1}]})",
          Endpoint::kChat)
          .param,
      "messages[0].reasoning_content");
  EXPECT_EQ(
      ParseError(
          R"({"model":"m","messages":[{"role":"user","content":"a"}],"chat_template_kwargs":{"thinking_budget":5}})",
          Endpoint::kChat)
          .param,
      "chat_template_kwargs.thinking_budget");
  EXPECT_EQ(
      ParseError(
          R"({"model":"m","messages":[{"role":"user","content":"a"}],"chat_template_kwargs":{"enable_thinking":"no"}})",
          Endpoint::kChat)
          .param,
      "chat_template_kwargs.enable_thinking");
  EXPECT_EQ(
      ParseError(
          R"({"model":"m","messages":[{"role":"user","content":"a"}],"tool_choice":"required","tools":[{"type":"function"}]})",
          Endpoint::kChat)
          .param,
      "tool_choice");
  EXPECT_EQ(
      ParseError(R"({"model":"m","messages":[{"role":"user","content":"a"}],"tools":{"a":1}})",
                 Endpoint::kChat)
          .param,
      "tools");
  EXPECT_EQ(
      ParseError(R"({"model":"m","messages":[{"role":"user","content":[{"type":"image_url"}]}]})",
                 Endpoint::kChat)
          .param,
      "messages[0].content");
  EXPECT_EQ(ParseError(R"({"prompt":"q"})").param, "model");
  EXPECT_EQ(ParseError(R"({"model":"m"})").param, "prompt");
  EXPECT_EQ(ParseError(R"({"model":"m"})", Endpoint::kChat).param, "messages");
  EXPECT_EQ(ParseError(R"([1,2])").param, "body");
  EXPECT_EQ(ParseError("{not json").http_status, 400);
}

TEST(OpenAiParse, LimitsAndUnsupportedFeatures) {
  ApiError e = ParseError(R"({"model":"m","prompt":"q","n":17})");
  EXPECT_EQ(e.param, "n");
  EXPECT_NE(e.message.find("16"), std::string::npos) << e.message;
  EXPECT_EQ(ParseError(R"({"model":"m","prompt":"q","n":2,"chorus":{"agents":2}})").param, "n");
  EXPECT_EQ(ParseError(R"({"model":"m","prompt":"q","max_tokens":0})").param, "max_tokens");
  EXPECT_EQ(ParseError(R"({"model":"m","prompt":"q","logprobs":true})").param, "logprobs");
  EXPECT_EQ(ParseError(R"({"model":"m","prompt":["a","b"]})").param, "prompt");
  EXPECT_EQ(ParseError(R"({"model":"m","prompt":"q","tools":[{"type":"function"}]})").param,
            "tools");
  // Harmless values of those parameters are accepted.
  Parse(R"({"model":"m","prompt":["q"],"logprobs":false,"tools":[],"echo":false,"best_of":1,
            "response_format":{"type":"text"}})");
}

TEST(OpenAiErrors, StatusesMapToOpenAiErrors) {
  ApiError e = ToApiError(
      absl::InvalidArgumentError("sampling.temperature: must be in [0.01, 2], got 9"), false);
  EXPECT_EQ(e.http_status, 400);
  EXPECT_EQ(e.param, "temperature");
  EXPECT_EQ(e.message, "temperature: must be in [0.01, 2], got 9");
  EXPECT_EQ(ToApiError(absl::InvalidArgumentError("reasoning.agents: too many"), false).param, "n");
  EXPECT_EQ(ToApiError(absl::InvalidArgumentError("reasoning.agents: too many"), true).param,
            "chorus.agents");
  EXPECT_EQ(ToApiError(absl::InvalidArgumentError("reasoning.answer_regex: bad"), true).param,
            "chorus.answer_regex");
  EXPECT_EQ(ToApiError(absl::InvalidArgumentError("latency_budget_ms: big"), true).param,
            "chorus.latency_budget_ms");
  EXPECT_EQ(ToApiError(absl::UnauthenticatedError("no"), false).http_status, 401);
  EXPECT_EQ(ToApiError(absl::NotFoundError("no"), false).http_status, 404);
  EXPECT_EQ(ToApiError(absl::ResourceExhaustedError("full"), false).http_status, 429);
  EXPECT_EQ(ToApiError(absl::UnavailableError("draining"), false).http_status, 503);
  EXPECT_EQ(ToApiError(absl::DeadlineExceededError("budget"), false).http_status, 504);
  EXPECT_EQ(ToApiError(absl::InternalError("x"), false).http_status, 500);
  json j = json::parse(ErrorJson(ToApiError(absl::ResourceExhaustedError("queue full"), false)));
  EXPECT_EQ(j["error"]["message"], "queue full");
  EXPECT_EQ(j["error"]["type"], "rate_limit_error");
  EXPECT_TRUE(j["error"]["param"].is_null());
}

GenerateResult ThreeDrafts() {
  GenerateResult r;
  r.request_id = "rid";
  r.agents = 3;
  r.text = "merged";
  r.finish = FinishReason::kEndOfText;
  r.prompt_tokens = 5;
  r.completion_tokens = 9;
  r.cached_prompt_tokens = 2;
  r.merge.winner = 1;
  for (int i : {2, 0, 1}) {
    DraftResult d;
    d.agent = i;
    d.text = "draft" + std::to_string(i);
    d.num_tokens = 3;
    d.finish = i == 2 ? FinishReason::kBudget : FinishReason::kEndOfText;
    r.drafts.push_back(d);
  }
  return r;
}

TEST(OpenAiResponse, PlainModeHasOneChoicePerDraftInAgentOrder) {
  OpenAiRequest req = Parse(R"({"model":"m","prompt":"q","n":3})");
  json j = json::parse(ResponseJson(req, {"cmpl-rid", "m", 7}, ThreeDrafts()));
  EXPECT_EQ(j["object"], "text_completion");
  ASSERT_EQ(j["choices"].size(), 3u);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(j["choices"][i]["index"], i);
    EXPECT_EQ(j["choices"][i]["text"], "draft" + std::to_string(i));
  }
  EXPECT_EQ(j["choices"][2]["finish_reason"], "length");  // budget-cut draft
  EXPECT_EQ(j["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(j["usage"]["total_tokens"], 14);
  EXPECT_EQ(j["usage"]["prompt_tokens_details"]["cached_tokens"], 2);
  EXPECT_FALSE(j["chorus"].contains("merge"));
}

TEST(OpenAiResponse, MergedModeHasOneChoiceAndChorusInfo) {
  OpenAiRequest req = Parse(R"({"model":"m","messages":[{"role":"user","content":"q"}],
                                "chorus":{"agents":3,"return_drafts":true}})",
                            Endpoint::kChat);
  json j = json::parse(ResponseJson(req, {"chatcmpl-rid", "m", 7}, ThreeDrafts()));
  EXPECT_EQ(j["object"], "chat.completion");
  ASSERT_EQ(j["choices"].size(), 1u);
  EXPECT_EQ(j["choices"][0]["message"]["content"], "merged");
  EXPECT_EQ(j["choices"][0]["message"]["role"], "assistant");
  EXPECT_EQ(j["chorus"]["merge"]["winner"], 1);
  EXPECT_EQ(j["chorus"]["agents"], 3);
  EXPECT_EQ(j["chorus"]["drafts"].size(), 3u);
  EXPECT_EQ(j["chorus"]["finish_reason"], "end_of_text");
}

// With tools in the request, Qwen3-style <tool_call> blocks in the answer become OpenAI
// tool_calls (finish_reason "tool_calls", arguments as JSON text); a block that does not parse
// leaves the whole text as content; without tools the text is never parsed.
TEST(OpenAiResponse, ToolCallBlocksBecomeToolCallsWhenToolsWereGiven) {
  const std::string body = R"({"model":"m","messages":[{"role":"user","content":"q"}],
    "tools":[{"type":"function","function":{"name":"get_weather"}}]})";
  OpenAiRequest req = Parse(body, Endpoint::kChat);
  GenerateResult r = ThreeDrafts();
  r.text =
      "Let me check.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": "
      "\"Paris\"}}\n</tool_call>\n"
      "<tool_call>\n{\"name\": \"now\", \"arguments\": \"{}\"}\n</tool_call>";
  json j = json::parse(ResponseJson(req, {"chatcmpl-rid", "m", 7}, r));
  const json& c = j["choices"][0];
  EXPECT_EQ(c["finish_reason"], "tool_calls");
  EXPECT_EQ(c["message"]["content"], "Let me check.");
  ASSERT_EQ(c["message"]["tool_calls"].size(), 2u);
  EXPECT_EQ(c["message"]["tool_calls"][0]["type"], "function");
  EXPECT_EQ(c["message"]["tool_calls"][0]["function"]["name"], "get_weather");
  EXPECT_EQ(json::parse(c["message"]["tool_calls"][0]["function"]["arguments"].get<std::string>()),
            json({{"city", "Paris"}}));
  // Object arguments come back as the template writes them (a round trip renders the same text).
  EXPECT_EQ(c["message"]["tool_calls"][0]["function"]["arguments"], "{\"city\": \"Paris\"}");
  EXPECT_EQ(c["message"]["tool_calls"][1]["function"]["arguments"], "{}");
  EXPECT_NE(c["message"]["tool_calls"][0]["id"].get<std::string>().find("chatcmpl-rid"),
            std::string::npos);
  EXPECT_NE(c["message"]["tool_calls"][0]["id"], c["message"]["tool_calls"][1]["id"]);

  // Cut off by max_tokens after a whole call: the calls are returned, the finish stays "length".
  r.finish = FinishReason::kLength;
  j = json::parse(ResponseJson(req, {"chatcmpl-rid", "m", 7}, r));
  EXPECT_EQ(j["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(j["choices"][0]["message"]["tool_calls"].size(), 2u);
  r.finish = FinishReason::kEndOfText;

  r.text =
      "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\"\n</tool_call>";  // cut off
  j = json::parse(ResponseJson(req, {"chatcmpl-rid", "m", 7}, r));
  EXPECT_EQ(j["choices"][0]["message"]["content"], r.text);
  EXPECT_FALSE(j["choices"][0]["message"].contains("tool_calls"));

  OpenAiRequest no_tools =
      Parse(R"({"model":"m","messages":[{"role":"user","content":"q"}]})", Endpoint::kChat);
  r.text = "<tool_call>\n{\"name\": \"f\", \"arguments\": {}}\n</tool_call>";
  j = json::parse(ResponseJson(no_tools, {"chatcmpl-rid", "m", 7}, r));
  EXPECT_EQ(j["choices"][0]["message"]["content"], r.text);
  EXPECT_EQ(j["choices"][0]["finish_reason"], "stop");
}

// Splits "data: ...\n\n" frames; returns the JSON payloads ([DONE] as the string "[DONE]").
std::vector<json> Frames(const std::string& sse) {
  std::vector<json> out;
  size_t pos = 0;
  while (pos < sse.size()) {
    const size_t end = sse.find("\n\n", pos);
    EXPECT_NE(end, std::string::npos);
    const std::string frame = sse.substr(pos, end - pos);
    EXPECT_EQ(frame.rfind("data: ", 0), 0u) << frame;
    const std::string payload = frame.substr(6);
    out.push_back(payload == "[DONE]" ? json("[DONE]") : json::parse(payload));
    pos = end + 2;
  }
  return out;
}

TEST(OpenAiStream, PlainChatStreamsEachChoiceWithRoleFirstThenUsage) {
  OpenAiRequest req =
      Parse(R"({"model":"m","messages":[{"role":"user","content":"q"}],"n":2,"stream":true,
                                "stream_options":{"include_usage":true}})",
            Endpoint::kChat);
  StreamEncoder enc(req, {"chatcmpl-x", "m", 1});
  std::string sse = enc.Delta(0, "a");  // one call per statement: the order matters
  sse += enc.Delta(1, "b");
  sse += enc.Delta(0, "c");
  DraftResult d0;
  d0.agent = 0;
  d0.finish = FinishReason::kStop;
  sse += enc.AgentFinished(d0);
  GenerateResult r = ThreeDrafts();
  r.drafts.pop_back();  // agents 2 and 0
  r.drafts[0].agent = 1;
  sse += enc.Complete(r);
  auto f = Frames(sse);
  ASSERT_EQ(f.size(), 7u);
  EXPECT_EQ(f[0]["object"], "chat.completion.chunk");
  EXPECT_EQ(f[0]["choices"][0]["delta"]["role"], "assistant");
  EXPECT_EQ(f[1]["choices"][0]["delta"]["role"], "assistant");  // first delta of choice 1
  EXPECT_FALSE(f[2]["choices"][0]["delta"].contains("role"));
  EXPECT_TRUE(f[2]["usage"].is_null());
  EXPECT_EQ(f[3]["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(f[4]["choices"][0]["index"], 1);  // choice 1's finish, from the result
  EXPECT_EQ(f[4]["choices"][0]["finish_reason"], "length");
  EXPECT_TRUE(f[5]["choices"].empty());
  EXPECT_EQ(f[5]["usage"]["completion_tokens"], 9);
  EXPECT_EQ(f[6], "[DONE]");
}

TEST(OpenAiStream, MergedModeSendsTheAnswerAtTheEnd) {
  OpenAiRequest req = Parse(R"({"model":"m","prompt":"q","stream":true,"chorus":{"agents":3}})");
  StreamEncoder enc(req, {"cmpl-x", "m", 1});
  EXPECT_EQ(enc.Delta(0, "draft text"), "");  // drafts are not choices
  auto f = Frames(enc.Complete(ThreeDrafts()));
  ASSERT_EQ(f.size(), 2u);
  EXPECT_EQ(f[0]["choices"][0]["text"], "merged");
  EXPECT_EQ(f[0]["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(f[0]["chorus"]["merge"]["winner"], 1);
  EXPECT_EQ(f[1], "[DONE]");
  auto e = Frames(StreamEncoder::ErrorFrame(ToApiError(absl::InternalError("boom"), true)));
  EXPECT_EQ(e[0]["error"]["type"], "server_error");
}

}  // namespace
}  // namespace chorus::http
