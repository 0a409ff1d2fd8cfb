// chorus eval's command line: the flags, the dataset, the settings, and the gRPC calls that
// RunEvalWith (eval.cc) drives.
#include <chrono>
#include <cstdio>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

#include "client.h"
#include "eval.h"

namespace chorus::client {
namespace pb = chorus::v1;
namespace {

constexpr char kEvalUsage[] =
    "usage: chorus eval --dataset FILE.jsonl [--agents 1,2,4,8,16] [--merge vote,confidence]\n"
    "  [--elastic MIN-MAX[,MIN-MAX...]] [--answer-regex RE] [--template 'Q: {question}\\nA:']\n"
    "  [--budget-ms B] [--concurrency C] [--limit N] [--max-tokens N] [--temperature T] "
    "[--seed S]\n"
    "  [--confidence-threshold P] [--confidence-window W]\n"
    "  [--json OUT] [--plot OUT.svg] [--addr HOST:PORT] [--retries N]\n"
    "Every problem at every setting (agents x merge; 1 agent once); prints accuracy with its 95%\n"
    "Wilson interval, latency mean/p50/p99, completion tokens, drafts stopped early, budget-cut\n"
    "fraction and drafts run. The answer: the last match of --answer-regex (its first group),\n"
    "else the last number of the merged text, compared normalized with the dataset's.\n";

std::vector<std::string> Split(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    if (!item.empty()) out.push_back(item);
  }
  return out;
}

// What the command line asks for.
struct EvalConfig {
  std::vector<EvalProblem> problems;
  std::vector<EvalSetting> settings;
  pb::GenerateRequest base;  // the common request flags
  int concurrency = 4, limit = 0, retries = 0;
};

bool ReadDataset(const std::string& path, std::vector<EvalProblem>* out, std::string* error) {
  std::ifstream in(path);
  if (!in) {
    *error = "cannot read " + path;
    return false;
  }
  std::stringstream ss;
  ss << in.rdbuf();
  if (!ParseDataset(ss.str(), out, error)) {
    *error = path + ": " + *error;
    return false;
  }
  return true;
}

// BuildRequest reads --agents/--merge as single values: give it neutral ones.
bool BuildBase(const tools::Flags& f, pb::GenerateRequest* base, std::string* error) {
  std::vector<std::string> args = {"chorus-eval"};
  for (const char* flag : {"budget-ms", "max-tokens", "temperature", "top-p", "top-k", "seed",
                           "stop", "priority", "confidence-threshold", "confidence-window"}) {
    if (f.Has(flag)) {
      args.push_back(std::string("--") + flag);
      args.push_back(f.Get(flag));
    }
  }
  std::vector<char*> argv2;
  for (auto& a : args) argv2.push_back(a.data());
  tools::Flags g(RequestFlags(), {"tls"});
  return g.Parse(static_cast<int>(argv2.size()), argv2.data(), error) &&
         BuildRequest(g, "", base, error);
}

// --agents (x --merge; 1 agent once), then --elastic ranges (x --merge).
bool ParseSettings(const tools::Flags& f, std::vector<EvalSetting>* settings, std::string* error) {
  const std::vector<std::string> merges = Split(f.Get("merge", "vote,confidence"));
  for (const std::string& a : Split(f.Get("agents", "1,2,4,8,16"))) {
    int n = 0;
    try {
      n = std::stoi(a);
    } catch (...) {
    }
    if (n < 1) {
      *error = "--agents takes a list of counts >= 1, got '" + a + "'";
      return false;
    }
    if (n == 1) {
      settings->push_back({1, "vote"});
      continue;
    }
    for (const std::string& m : merges) settings->push_back({n, m});
  }
  for (const std::string& range : Split(f.Get("elastic", ""))) {
    EvalSetting s;
    if (std::sscanf(range.c_str(), "%d-%d", &s.min_agents, &s.max_agents) != 2 ||
        s.min_agents < 1 || s.max_agents < s.min_agents) {
      *error = "--elastic takes MIN-MAX ranges, got '" + range + "'";
      return false;
    }
    for (const std::string& m : merges) {
      s.merge = m;
      settings->push_back(s);
    }
  }
  return true;
}

// Everything after --help and --dataset's presence: false with *error on a bad flag or file.
bool ReadConfig(const tools::Flags& f, EvalConfig* cfg, std::string* error) {
  if (!ReadDataset(f.Get("dataset"), &cfg->problems, error)) return false;
  if (!f.GetNumber("concurrency", 4, 1, 1024, &cfg->concurrency, error) ||
      !f.GetNumber("limit", 0, 0, 100000000, &cfg->limit, error) ||
      !f.GetNumber("retries", 0, 0, 100, &cfg->retries, error)) {
    return false;
  }
  if (cfg->limit > 0 && static_cast<size_t>(cfg->limit) < cfg->problems.size()) {
    cfg->problems.resize(cfg->limit);
  }
  return BuildBase(f, &cfg->base, error) && ParseSettings(f, &cfg->settings, error);
}

// One unary Generate call (with --retries), timed client-side.
EvalOutcome Generate(const Connection& conn, pb::Chorus::Stub* stub, int retries,
                     const pb::GenerateRequest& req) {
  EvalOutcome o;
  pb::GenerateResponse resp;
  const auto start = std::chrono::steady_clock::now();
  grpc::Status s;
  for (int attempt = 0;; ++attempt) {
    grpc::ClientContext ctx;
    conn.Prepare(&ctx);
    s = stub->Generate(&ctx, req, &resp);
    if (s.ok() || attempt >= retries || !Retryable(s)) break;
    RetryBackoff(attempt);
  }
  o.latency_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  if (!s.ok()) return o;
  o.ok = true;
  o.text = resp.text();
  o.completion_tokens = resp.usage().completion_tokens();
  o.budget_cut = resp.timing().budget_cut();
  o.agents_used = resp.drafts_size();
  for (const auto& d : resp.drafts()) {
    o.drafts_stopped_early +=
        d.finish_reason() == pb::CONSENSUS || d.finish_reason() == pb::LOW_CONFIDENCE;
  }
  return o;
}

}  // namespace

int RunEval(int argc, char** argv) {
  auto names = RequestFlags();
  for (const char* n :
       {"dataset", "answer-regex", "template", "concurrency", "limit", "json", "plot", "elastic"}) {
    names.insert(n);
  }
  tools::Flags f(names, {"help", "tls"});
  std::string error;
  if (!f.Parse(argc, argv, &error)) {
    std::fprintf(stderr, "chorus eval: %s (see --help)\n", error.c_str());
    return 2;
  }
  if (f.Has("help")) {
    std::fputs(kEvalUsage, stdout);
    return 0;
  }
  if (!f.Has("dataset")) {
    std::fprintf(stderr, "chorus eval: --dataset is required\n%s", kEvalUsage);
    return 2;
  }
  EvalConfig cfg;
  Connection conn;
  if (!ReadConfig(f, &cfg, &error) || !Connect(f, &conn, &error)) {
    std::fprintf(stderr, "chorus eval: %s\n", error.c_str());
    return 2;
  }
  auto stub = pb::Chorus::NewStub(conn.channel);
  auto generate = [&](const pb::GenerateRequest& req) {
    return Generate(conn, stub.get(), cfg.retries, req);
  };
  const std::string tmpl = f.Get("template", "{question}");
  std::string regex = f.Get("answer-regex", "");
  cfg.base.mutable_reasoning()->set_answer_regex(regex);  // the server's vote extracts the same
  std::vector<EvalRow> rows =
      RunEvalWith(cfg.problems, cfg.settings, cfg.base, tmpl, regex, cfg.concurrency, generate);
  std::fputs(FormatTable(rows).c_str(), stdout);
  if (f.Has("json")) std::ofstream(f.Get("json")) << FormatJson(rows);
  if (f.Has("plot")) {
    std::ofstream(f.Get("plot")) << FormatSvg(rows, "chorus eval: " + f.Get("dataset") + " (" +
                                                        std::to_string(cfg.problems.size()) +
                                                        " problems)");
  }
  return 0;
}

}  // namespace chorus::client
