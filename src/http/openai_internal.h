// The OpenAI wire format's shared pieces (openai.h's implementation, not its API): bounded JSON
// parsing, Python-style JSON text, and the JSON objects both responses and streams carry.
// openai.cc: these and the error/model objects; openai_request.cc: ParseRequest;
// openai_response.cc: ResponseJson and StreamEncoder.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "chorus/core/request.h"
#include "chorus/http/openai.h"

namespace chorus::http::internal {

// Ordered: tool definitions and arguments keep the client's key order, which the chat
// template's tojson writes out (and responses keep a readable field order).
using json = nlohmann::ordered_json;

// Compact JSON text; invalid UTF-8 is replaced, never thrown on.
std::string Dump(const json& j);

// Parsing does not recurse, but dumping, copying and AppendPythonJson do: a body nested a
// million levels deep would overflow an HTTP thread's stack. Values deeper than this are
// dropped while parsing and the text is refused.
inline constexpr int kMaxJsonDepth = 64;

// Parses `text` (discarded on a syntax error); *too_deep when it nests past kMaxJsonDepth.
json ParseBounded(std::string_view text, bool* too_deep);

// Python's json.dumps(x, ensure_ascii=False): ", " and ": " separators, keys in order, non-ASCII
// kept, control characters as \u00XX. What transformers' tojson writes into a chat template.
void AppendPythonJson(const json& j, std::string* out);

// OpenAI knows "stop" and "length"; a draft cut by the budget or the context is "length".
const char* OpenAiFinish(FinishReason r);

// The "usage" object, and the "chorus" object (timing, merge, drafts) of a finished request.
json UsageJson(const GenerateResult& r);
json ChorusJson(const OpenAiRequest& req, const GenerateResult& r);

// The drafts in agent order (plain mode: choice i is agent i).
std::vector<const DraftResult*> ByAgent(const GenerateResult& r);

}  // namespace chorus::http::internal
