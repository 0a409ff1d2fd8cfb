// chorus bench --http URL: the same load through the OpenAI-compatible HTTP API (streamed
// /v1/completions, Server-Sent Events), so one run per API compares them. Agents > 1 go in the
// "chorus" extension with return_drafts, whose per-draft delta frames time the tokens as the
// gRPC stream's deltas do.
#include <httplib.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <map>
#include <nlohmann/json.hpp>
#include <string>

#include "client.h"

namespace chorus::client {
namespace pb = chorus::v1;
using json = nlohmann::json;

bool HttpBenchConnect(const std::string& url, const std::string& auth, HttpTarget* out,
                      std::string* error) {
  const std::string prefix = "http://";
  if (url.rfind(prefix, 0) != 0) {
    *error = "--http must be http://HOST:PORT, got '" + url + "'";
    return false;
  }
  std::string hostport = url.substr(prefix.size());
  while (!hostport.empty() && hostport.back() == '/') hostport.pop_back();
  const size_t colon = hostport.rfind(':');
  if (colon == std::string::npos) {
    *error = "--http must be http://HOST:PORT, got '" + url + "'";
    return false;
  }
  out->host = hostport.substr(0, colon);
  try {
    out->port = std::stoi(hostport.substr(colon + 1));
  } catch (...) {
    *error = "--http: bad port in '" + url + "'";
    return false;
  }
  out->auth = auth;
  httplib::Client c(out->host, out->port);
  httplib::Headers h;
  if (!auth.empty()) h.emplace("Authorization", auth);
  auto res = c.Get("/v1/models", h);
  if (!res || res->status != 200) {
    *error = "GET " + url + "/v1/models failed" +
             (res ? " with HTTP " + std::to_string(res->status) : "");
    return false;
  }
  json j = json::parse(res->body, nullptr, false);
  if (j.is_discarded() || !j.contains("data") || j["data"].empty()) {
    *error = "GET /v1/models: no model listed";
    return false;
  }
  out->model = j["data"][0].value("id", "");
  return true;
}

std::string HttpBenchBody(const HttpTarget& t, const pb::GenerateRequest& req) {
  json body = {{"model", t.model},
               {"prompt", req.prompt()},
               {"max_tokens", req.max_tokens()},
               {"temperature", req.sampling().temperature()},
               {"top_p", req.sampling().top_p() == 0 ? 1.0f : req.sampling().top_p()},
               {"stream", true},
               {"stream_options", {{"include_usage", true}}}};
  if (req.sampling().seed() != 0) body["seed"] = req.sampling().seed();
  if (req.stop_size() > 0) body["stop"] = req.stop(0);
  const int agents = std::max(1, req.reasoning().agents());
  std::string merge = pb::MergeStrategy_Name(req.reasoning().merge());
  for (char& c : merge) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (merge == "merge_strategy_unspecified") merge = "vote";
  json chorus = {{"agents", agents}, {"merge", merge}, {"return_drafts", agents > 1}};
  if (req.latency_budget_ms() > 0) chorus["latency_budget_ms"] = req.latency_budget_ms();
  if (req.priority() != 0) chorus["priority"] = req.priority();
  const auto& r = req.reasoning();
  if (r.max_agents() > 0) {  // elastic
    chorus.erase("agents");
    chorus["min_agents"] = r.min_agents();
    chorus["max_agents"] = r.max_agents();
    chorus["return_drafts"] = true;
  }
  if (r.confidence_threshold() > 0) chorus["confidence_threshold"] = r.confidence_threshold();
  if (r.confidence_window() > 0) chorus["confidence_window"] = r.confidence_window();
  body["chorus"] = chorus;
  return body.dump();
}

namespace {

using Clock = std::chrono::steady_clock;

// A streamed response as it arrives: Server-Sent Events frames, parsed one at a time.
struct StreamState {
  HttpOutcome* o = nullptr;
  Clock::time_point start;
  std::map<int, Clock::time_point> last;  // agent -> time of its last text
  std::string buffer;                     // bytes of an incomplete frame
  bool done = false;                      // "data: [DONE]" seen
};

// One "data: " payload: an error, usage, the budget cut, and the timing of agents' text.
void OnPayload(const std::string& payload, StreamState* st) {
  HttpOutcome& o = *st->o;
  if (payload == "[DONE]") {
    st->done = true;
    return;
  }
  json j = json::parse(payload, nullptr, false);
  if (j.is_discarded()) return;
  if (j.contains("error")) {
    o.error = j["error"].value("message", "error");
    return;
  }
  if (j.contains("usage") && j["usage"].is_object()) {
    o.output_tokens = j["usage"].value("completion_tokens", 0);
  }
  if (j.contains("chorus") && j["chorus"].is_object()) {
    if (j["chorus"].contains("budget_cut")) o.budget_cut = j["chorus"].value("budget_cut", false);
  }
  int agent = -1;
  if (j.contains("chorus") && j["chorus"].contains("delta")) {
    agent = j["chorus"].value("agent", 0);
  } else if (j.contains("choices") && !j["choices"].empty() &&
             !j["choices"][0].value("text", "").empty() &&
             !(j.contains("chorus") && j["chorus"].contains("merge"))) {
    agent = j["choices"][0].value("index", 0);
  }
  if (agent >= 0) {
    const auto now = Clock::now();
    if (o.ttft_ms < 0) {
      o.ttft_ms = std::chrono::duration<double, std::milli>(now - st->start).count();
    }
    auto it = st->last.find(agent);
    if (it != st->last.end()) {
      o.itl_ms.push_back(std::chrono::duration<double, std::milli>(now - it->second).count());
    }
    st->last[agent] = now;
  }
}

// Appends received bytes and handles every complete frame.
void OnBytes(const char* data, size_t len, StreamState* st) {
  st->buffer.append(data, len);
  size_t end;
  while ((end = st->buffer.find("\n\n")) != std::string::npos) {
    const std::string frame = st->buffer.substr(0, end);
    st->buffer.erase(0, end + 2);
    if (frame.rfind("data: ", 0) != 0) continue;  // ": keep-alive" comments
    OnPayload(frame.substr(6), st);
  }
}

}  // namespace

HttpOutcome HttpBenchOne(const HttpTarget& t, const std::string& body, int64_t timeout_ms) {
  HttpOutcome o;
  httplib::Client c(t.host, t.port);
  if (timeout_ms > 0) c.set_read_timeout(std::chrono::milliseconds(timeout_ms));
  httplib::Headers h;
  if (!t.auth.empty()) h.emplace("Authorization", t.auth);
  StreamState st;
  st.o = &o;
  st.start = Clock::now();
  std::string error_body;
  httplib::Request r;
  r.method = "POST";
  r.path = "/v1/completions";
  r.headers = h;
  r.body = body;
  r.set_header("Content-Type", "application/json");
  r.response_handler = [&](const httplib::Response& res) {
    o.http_status = res.status;
    return true;
  };
  r.content_receiver = [&](const char* data, size_t len, uint64_t, uint64_t) {
    if (o.http_status != 200) {
      error_body.append(data, len);
    } else {
      OnBytes(data, len, &st);
    }
    return true;
  };
  auto res = c.send(r);
  if (!res) {
    o.http_status = 0;
    o.error = "connection failed: " + httplib::to_string(res.error());
  } else if (o.http_status != 200) {
    json j = json::parse(error_body, nullptr, false);
    o.error =
        (!j.is_discarded() && j.contains("error")) ? j["error"].value("message", "") : error_body;
  } else if (!st.done && o.error.empty()) {
    o.error = "stream ended without [DONE]";
  }
  return o;
}

}  // namespace chorus::client
