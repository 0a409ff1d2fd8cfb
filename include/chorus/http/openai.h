// The OpenAI-compatible wire format (issue 15), with no sockets: request JSON -> GenerateInput
// (every field type-checked, errors naming OpenAI's parameter), results -> response JSON and
// Server-Sent Events, absl::Status -> OpenAI error objects and HTTP statuses. Pure functions;
// http_server.cc moves the bytes.
//
// Two ways to run a request:
//  - plain OpenAI (no "chorus" object): `n` independent choices, one agent each, no merge and
//    no early stop (BEST_LOGPROB keeps every draft running to its own end);
//  - with "chorus": {"agents", "merge", ...}: the agents' drafts are merged into ONE choice,
//    and the response carries a "chorus" object with the merge, timing and (if asked) drafts.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "chorus/admission/admission.h"
#include "chorus/core/request.h"

namespace chorus::http {

enum class Endpoint { kCompletions, kChat };

// An error as OpenAI sends it: {"error": {"message", "type", "param", "code"}}.
struct ApiError {
  int http_status = 500;
  std::string type;   // invalid_request_error, authentication_error, ...
  std::string code;   // may be empty (null)
  std::string param;  // the request parameter at fault; may be empty (null)
  std::string message;
};

struct OpenAiRequest {
  Endpoint endpoint = Endpoint::kCompletions;
  std::string model;
  GenerateInput input;  // what admission validates (request_id left for the server to set)
  int n = 1;            // choices (plain mode)
  bool merged = false;  // "chorus" object present: one merged choice
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage
};

// Parses one request body. On error fills `error` (400, naming the parameter) and returns false.
// `max_agents` bounds n (n agents are n drafts).
bool ParseRequest(std::string_view body, Endpoint endpoint, int max_agents, OpenAiRequest* out,
                  ApiError* error);

// The error for a status from auth, admission or the runtime: admission's field names
// ("sampling.temperature") become OpenAI's ("temperature"); "reasoning.agents" is "n" in
// plain mode, "chorus.agents" otherwise.
ApiError ToApiError(const absl::Status& status, bool merged);
std::string ErrorJson(const ApiError& e);

// JSON text rewritten as Python's json.dumps(ensure_ascii=False) writes it: the form in which
// chat templates render tool definitions and arguments. False when `json_text` is not JSON.
bool ToPythonStyleJson(std::string_view json_text, std::string* out);

// GET /v1/models and /v1/models/{id}.
std::string ModelJson(std::string_view model_id, int64_t created);
std::string ModelListJson(std::string_view model_id, int64_t created);

// What a response is stamped with.
struct ResponseMeta {
  std::string id;  // "cmpl-..." / "chatcmpl-..."
  std::string model;
  int64_t created = 0;  // unix seconds
};

// A finished, non-streamed request: n choices (plain) or one merged choice plus "chorus".
std::string ResponseJson(const OpenAiRequest& req, const ResponseMeta& meta,
                         const GenerateResult& r);

// Server-Sent Events for a streamed request, one "data: {...}\n\n" frame per call.
class StreamEncoder {
 public:
  StreamEncoder(OpenAiRequest req, ResponseMeta meta)
      : req_(std::move(req)), meta_(std::move(meta)) {}
  // Text of agent `agent` (plain mode: choice `agent`; merged mode with one agent: choice 0;
  // merged mode with several agents: a "chorus" draft delta when return_drafts, else nothing).
  std::string Delta(int agent, std::string_view text);
  // A draft ended (plain mode: its choice's finish_reason frame).
  std::string AgentFinished(const DraftResult& d);
  // The end: merged mode's answer frame (with "chorus"), the usage frame when asked, [DONE].
  std::string Complete(const GenerateResult& r);
  // An error after the stream started: an error frame (OpenAI's shape) and no [DONE].
  static std::string ErrorFrame(const ApiError& e);

 private:
  std::string Chunk(std::string choices_json, std::string_view extra = {});
  const OpenAiRequest req_;
  ResponseMeta meta_;
  std::vector<char> role_sent_;  // chat: the first delta of a choice carries the role
  std::vector<char> finished_;   // plain mode: choices whose finish frame was sent
};

}  // namespace chorus::http
