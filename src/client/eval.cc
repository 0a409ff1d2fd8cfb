#include "eval.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>
#include <thread>

#include "client.h"

namespace chorus::client {
namespace pb = chorus::v1;
using json = nlohmann::json;

bool ParseDataset(const std::string& text, std::vector<EvalProblem>* out, std::string* error) {
  std::istringstream in(text);
  std::string line;
  int no = 0;
  while (std::getline(in, line)) {
    ++no;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    json j = json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.is_object() || !j.contains("question") || !j["question"].is_string() ||
        !j.contains("answer")) {
      *error = "line " + std::to_string(no) + ": expected {\"question\": string, \"answer\": string or number}";
      return false;
    }
    EvalProblem p;
    p.question = j["question"].get<std::string>();
    p.answer = j["answer"].is_string() ? j["answer"].get<std::string>() : j["answer"].dump();
    out->push_back(std::move(p));
  }
  if (out->empty()) {
    *error = "no problems in the dataset";
    return false;
  }
  return true;
}

std::string NormalizeAnswer(const std::string& s) {
  std::string out;
  bool space = false;
  for (size_t i = 0; i < s.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (std::isspace(c)) {
      space = !out.empty();
      continue;
    }
    // "1,024" -> "1024": a comma between digits.
    if (c == ',' && !out.empty() && std::isdigit(static_cast<unsigned char>(out.back())) && i + 1 < s.size() &&
        std::isdigit(static_cast<unsigned char>(s[i + 1]))) {
      continue;
    }
    if (space) out.push_back(' ');
    space = false;
    out.push_back(static_cast<char>(std::tolower(c)));
  }
  while (!out.empty() && out.back() == '.') out.pop_back();
  return out;
}

std::string ExtractAnswer(const std::string& text, const std::string& regex) {
  if (!regex.empty()) {
    try {
      const std::regex re(regex, std::regex::ECMAScript);
      std::smatch last;
      bool found = false;
      for (auto it = std::sregex_iterator(text.begin(), text.end(), re); it != std::sregex_iterator(); ++it) {
        last = *it;
        found = true;
      }
      if (found) return NormalizeAnswer(last.size() > 1 && last[1].matched ? last[1].str() : last[0].str());
      return "";
    } catch (const std::regex_error&) {
      return "";
    }
  }
  static const std::regex number(R"(-?\d[\d,]*(\.\d+)?)");
  std::string found;
  for (auto it = std::sregex_iterator(text.begin(), text.end(), number); it != std::sregex_iterator(); ++it) {
    found = it->str();
  }
  return NormalizeAnswer(found.empty() ? text : found);
}

std::string ReferenceAnswer(const std::string& answer) {
  const size_t marks = answer.rfind("####");
  return NormalizeAnswer(marks == std::string::npos ? answer : answer.substr(marks + 4));
}

Interval Wilson(int k, int n, double z) {
  if (n <= 0) return {0, 1};
  const double p = static_cast<double>(k) / n;
  const double z2 = z * z;
  const double denom = 1 + z2 / n;
  const double center = (p + z2 / (2.0 * n)) / denom;
  const double half = z * std::sqrt(p * (1 - p) / n + z2 / (4.0 * n * n)) / denom;
  return {std::max(0.0, center - half), std::min(1.0, center + half)};
}

std::string EvalSetting::Label() const {
  if (max_agents > 0) return "elastic " + std::to_string(min_agents) + "-" + std::to_string(max_agents) + " " + merge;
  if (agents == 1) return "1 agent";
  return std::to_string(agents) + " " + merge;
}

namespace {

double Percentile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(q * (v.size() - 1) + 0.5))];
}

}  // namespace

EvalRow Score(const EvalSetting& s, const std::vector<EvalProblem>& problems,
              const std::vector<EvalOutcome>& outcomes, const std::string& answer_regex) {
  EvalRow row;
  row.setting = s;
  row.n = static_cast<int>(std::min(problems.size(), outcomes.size()));
  std::vector<double> lat;
  double tokens = 0, early = 0, agents = 0;
  int cut = 0;
  for (int i = 0; i < row.n; ++i) {
    const EvalOutcome& o = outcomes[i];
    if (!o.ok) {
      ++row.errors;
      continue;
    }
    if (ExtractAnswer(o.text, answer_regex) == ReferenceAnswer(problems[i].answer)) ++row.correct;
    lat.push_back(o.latency_ms);
    tokens += o.completion_tokens;
    early += o.drafts_stopped_early;
    agents += o.agents_used;
    cut += o.budget_cut;
  }
  const int ok = row.n - row.errors;
  row.accuracy = row.n > 0 ? static_cast<double>(row.correct) / row.n : 0;
  row.ci = Wilson(row.correct, row.n);
  if (ok > 0) {
    double sum = 0;
    for (double x : lat) sum += x;
    row.latency_mean = sum / ok;
    row.latency_p50 = Percentile(lat, 0.5);
    row.latency_p99 = Percentile(lat, 0.99);
    row.tokens_mean = tokens / ok;
    row.early_stopped_mean = early / ok;
    row.agents_mean = agents / ok;
    row.budget_cut_fraction = static_cast<double>(cut) / ok;
  }
  return row;
}

std::string FormatTable(const std::vector<EvalRow>& rows) {
  std::ostringstream o;
  char buf[512];
  std::snprintf(buf, sizeof(buf), "%-24s %5s %9s %15s %9s %9s %9s %9s %8s %7s %6s %6s\n", "setting", "n",
                "accuracy", "95% interval", "lat mean", "lat p50", "lat p99", "tokens", "early", "cut", "agents",
                "errors");
  o << buf;
  for (const EvalRow& r : rows) {
    std::snprintf(buf, sizeof(buf), "%-24s %5d %8.1f%% [%5.1f, %5.1f]%% %9.1f %9.1f %9.1f %9.1f %8.2f %7.3f %6.2f %6d\n",
                  r.setting.Label().c_str(), r.n, 100 * r.accuracy, 100 * r.ci.lo, 100 * r.ci.hi, r.latency_mean,
                  r.latency_p50, r.latency_p99, r.tokens_mean, r.early_stopped_mean, r.budget_cut_fraction,
                  r.agents_mean, r.errors);
    o << buf;
  }
  o << "(latency in ms, client-side; tokens = completion tokens of all drafts per request; early = drafts "
       "stopped early per request; cut = fraction of requests the budget cut; agents = drafts run)\n";
  return o.str();
}

std::string FormatJson(const std::vector<EvalRow>& rows) {
  json out = json::array();
  for (const EvalRow& r : rows) {
    out.push_back({{"setting", r.setting.Label()},
                   {"agents", r.setting.agents},
                   {"min_agents", r.setting.min_agents},
                   {"max_agents", r.setting.max_agents},
                   {"merge", r.setting.merge},
                   {"n", r.n},
                   {"correct", r.correct},
                   {"errors", r.errors},
                   {"accuracy", r.accuracy},
                   {"ci95", {r.ci.lo, r.ci.hi}},
                   {"latency_ms", {{"mean", r.latency_mean}, {"p50", r.latency_p50}, {"p99", r.latency_p99}}},
                   {"tokens_mean", r.tokens_mean},
                   {"drafts_stopped_early_mean", r.early_stopped_mean},
                   {"budget_cut_fraction", r.budget_cut_fraction},
                   {"agents_mean", r.agents_mean}});
  }
  return out.dump(2) + "\n";
}

std::string FormatSvg(const std::vector<EvalRow>& rows, const std::string& title) {
  const double W = 720, H = 440, L = 70, R = 200, T = 40, B = 50;
  double xmax = 1;
  for (const EvalRow& r : rows) xmax = std::max(xmax, r.latency_p50);
  xmax *= 1.1;
  auto X = [&](double ms) { return L + (W - L - R) * ms / xmax; };
  auto Y = [&](double acc) { return T + (H - T - B) * (1 - acc); };
  std::ostringstream o;
  o << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << W << "\" height=\"" << H
    << "\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  std::string t = title;
  for (char& c : t) {
    if (c == '<' || c == '>' || c == '&') c = ' ';
  }
  o << "<text x=\"" << L << "\" y=\"22\" font-size=\"14\">" << t << "</text>\n";
  o << "<line x1=\"" << L << "\" y1=\"" << H - B << "\" x2=\"" << W - R << "\" y2=\"" << H - B << "\" stroke=\"black\"/>\n";
  o << "<line x1=\"" << L << "\" y1=\"" << T << "\" x2=\"" << L << "\" y2=\"" << H - B << "\" stroke=\"black\"/>\n";
  for (int i = 0; i <= 5; ++i) {
    const double acc = i / 5.0, ms = xmax * i / 5.0;
    o << "<text x=\"" << L - 8 << "\" y=\"" << Y(acc) + 4 << "\" text-anchor=\"end\">" << static_cast<int>(acc * 100)
      << "%</text>\n";
    o << "<line x1=\"" << L << "\" y1=\"" << Y(acc) << "\" x2=\"" << W - R << "\" y2=\"" << Y(acc)
      << "\" stroke=\"#ddd\"/>\n";
    o << "<text x=\"" << X(ms) << "\" y=\"" << H - B + 18 << "\" text-anchor=\"middle\">" << static_cast<int>(ms)
      << "</text>\n";
  }
  o << "<text x=\"" << (L + W - R) / 2 << "\" y=\"" << H - 10 << "\" text-anchor=\"middle\">p50 latency (ms)</text>\n";
  o << "<text x=\"16\" y=\"" << (T + H - B) / 2 << "\" transform=\"rotate(-90 16 " << (T + H - B) / 2
    << ")\" text-anchor=\"middle\">accuracy (95% interval)</text>\n";
  static const char* kColors[] = {"#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"};
  std::vector<std::string> merges;
  for (const EvalRow& r : rows) {
    if (std::find(merges.begin(), merges.end(), r.setting.merge) == merges.end()) merges.push_back(r.setting.merge);
  }
  for (const EvalRow& r : rows) {
    const size_t mi = std::find(merges.begin(), merges.end(), r.setting.merge) - merges.begin();
    const char* color = r.setting.agents == 1 && r.setting.max_agents == 0 ? "black" : kColors[mi % 6];
    const double x = X(r.latency_p50);
    o << "<line x1=\"" << x << "\" y1=\"" << Y(r.ci.lo) << "\" x2=\"" << x << "\" y2=\"" << Y(r.ci.hi)
      << "\" stroke=\"" << color << "\"/>\n";
    o << "<circle cx=\"" << x << "\" cy=\"" << Y(r.accuracy) << "\" r=\"4\" fill=\"" << color << "\"/>\n";
    o << "<text x=\"" << x + 6 << "\" y=\"" << Y(r.accuracy) - 6 << "\" fill=\"" << color << "\">"
      << r.setting.Label() << "</text>\n";
  }
  int ly = T;
  for (size_t i = 0; i < merges.size(); ++i, ly += 18) {
    o << "<circle cx=\"" << W - R + 20 << "\" cy=\"" << ly << "\" r=\"4\" fill=\"" << kColors[i % 6] << "\"/>\n";
    o << "<text x=\"" << W - R + 30 << "\" y=\"" << ly + 4 << "\">" << merges[i] << "</text>\n";
  }
  o << "</svg>\n";
  return o.str();
}

pb::GenerateRequest EvalRequest(const pb::GenerateRequest& base, const EvalSetting& s, const std::string& prompt) {
  pb::GenerateRequest req = base;
  req.set_prompt(prompt);
  auto* r = req.mutable_reasoning();
  std::string upper;
  for (char c : s.merge) upper.push_back(static_cast<char>(std::toupper(static_cast<unsigned char>(c))));
  pb::MergeStrategy m = pb::VOTE;
  (void)pb::MergeStrategy_Parse(upper, &m);
  r->set_merge(m);
  r->set_return_drafts(true);
  if (s.max_agents > 0) {
    r->set_agents(0);
    r->set_min_agents(s.min_agents);
    r->set_max_agents(s.max_agents);
  } else {
    r->set_agents(s.agents);
  }
  return req;
}

std::vector<EvalRow> RunEvalWith(const std::vector<EvalProblem>& problems, const std::vector<EvalSetting>& settings,
                                 const pb::GenerateRequest& base, const std::string& prompt_template,
                                 const std::string& answer_regex, int concurrency,
                                 const std::function<EvalOutcome(const pb::GenerateRequest&)>& generate) {
  std::vector<EvalRow> rows;
  for (const EvalSetting& s : settings) {
    std::vector<EvalOutcome> outcomes(problems.size());
    std::atomic<size_t> next{0};
    std::vector<std::thread> workers;
    for (int w = 0; w < std::max(1, concurrency); ++w) {
      workers.emplace_back([&] {
        for (size_t i; (i = next.fetch_add(1)) < problems.size();) {
          std::string prompt = prompt_template;
          const size_t at = prompt.find("{question}");
          if (at != std::string::npos) prompt.replace(at, 10, problems[i].question);
          outcomes[i] = generate(EvalRequest(base, s, prompt));
        }
      });
    }
    for (auto& t : workers) t.join();
    rows.push_back(Score(s, problems, outcomes, answer_regex));
    std::fprintf(stderr, "[eval] %-24s accuracy %.1f%%\n", s.Label().c_str(), 100 * rows.back().accuracy);
  }
  return rows;
}

namespace {

constexpr char kEvalUsage[] =
    "usage: chorus eval --dataset FILE.jsonl [--agents 1,2,4,8,16] [--merge vote,confidence]\n"
    "  [--elastic MIN-MAX[,MIN-MAX...]] [--answer-regex RE] [--template 'Q: {question}\\nA:']\n"
    "  [--budget-ms B] [--concurrency C] [--limit N] [--max-tokens N] [--temperature T] [--seed S]\n"
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

}  // namespace

int RunEval(int argc, char** argv) {
  auto names = RequestFlags();
  for (const char* n : {"dataset", "answer-regex", "template", "concurrency", "limit", "json", "plot", "elastic"}) {
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
  std::ifstream in(f.Get("dataset"));
  if (!in) {
    std::fprintf(stderr, "chorus eval: cannot read %s\n", f.Get("dataset").c_str());
    return 2;
  }
  std::stringstream ss;
  ss << in.rdbuf();
  std::vector<EvalProblem> problems;
  if (!ParseDataset(ss.str(), &problems, &error)) {
    std::fprintf(stderr, "chorus eval: %s: %s\n", f.Get("dataset").c_str(), error.c_str());
    return 2;
  }
  int concurrency = 4, limit = 0, retries = 0;
  if (!f.GetNumber("concurrency", 4, 1, 1024, &concurrency, &error) ||
      !f.GetNumber("limit", 0, 0, 100000000, &limit, &error) || !f.GetNumber("retries", 0, 0, 100, &retries, &error)) {
    std::fprintf(stderr, "chorus eval: %s\n", error.c_str());
    return 2;
  }
  if (limit > 0 && static_cast<size_t>(limit) < problems.size()) problems.resize(limit);
  // BuildRequest reads --agents/--merge as single values: give it neutral ones.
  pb::GenerateRequest base;
  {
    std::vector<std::string> args = {"chorus-eval"};
    for (const char* flag : {"budget-ms", "max-tokens", "temperature", "top-p", "top-k", "seed", "stop", "priority"}) {
      if (f.Has(flag)) {
        args.push_back(std::string("--") + flag);
        args.push_back(f.Get(flag));
      }
    }
    std::vector<char*> argv2;
    for (auto& a : args) argv2.push_back(a.data());
    tools::Flags g(RequestFlags(), {"tls"});
    if (!g.Parse(static_cast<int>(argv2.size()), argv2.data(), &error) || !BuildRequest(g, "", &base, &error)) {
      std::fprintf(stderr, "chorus eval: %s\n", error.c_str());
      return 2;
    }
  }
  std::vector<EvalSetting> settings;
  const std::vector<std::string> merges = Split(f.Get("merge", "vote,confidence"));
  for (const std::string& a : Split(f.Get("agents", "1,2,4,8,16"))) {
    int n = 0;
    try {
      n = std::stoi(a);
    } catch (...) {
    }
    if (n < 1) {
      std::fprintf(stderr, "chorus eval: --agents takes a list of counts >= 1, got '%s'\n", a.c_str());
      return 2;
    }
    if (n == 1) {
      settings.push_back({1, "vote"});
      continue;
    }
    for (const std::string& m : merges) settings.push_back({n, m});
  }
  for (const std::string& range : Split(f.Get("elastic", ""))) {
    EvalSetting s;
    if (std::sscanf(range.c_str(), "%d-%d", &s.min_agents, &s.max_agents) != 2 || s.min_agents < 1 ||
        s.max_agents < s.min_agents) {
      std::fprintf(stderr, "chorus eval: --elastic takes MIN-MAX ranges, got '%s'\n", range.c_str());
      return 2;
    }
    for (const std::string& m : merges) {
      s.merge = m;
      settings.push_back(s);
    }
  }
  Connection conn;
  if (!Connect(f, &conn, &error)) {
    std::fprintf(stderr, "chorus eval: %s\n", error.c_str());
    return 2;
  }
  auto stub = pb::Chorus::NewStub(conn.channel);
  auto generate = [&](const pb::GenerateRequest& req) {
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
    o.latency_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    if (!s.ok()) return o;
    o.ok = true;
    o.text = resp.text();
    o.completion_tokens = resp.usage().completion_tokens();
    o.budget_cut = resp.timing().budget_cut();
    o.agents_used = resp.drafts_size();
    for (const auto& d : resp.drafts()) {
      o.drafts_stopped_early += d.finish_reason() == pb::CONSENSUS || d.finish_reason() == pb::LOW_CONFIDENCE;
    }
    return o;
  };
  const std::string tmpl = f.Get("template", "{question}");
  std::string regex = f.Get("answer-regex", "");
  base.mutable_reasoning()->set_answer_regex(regex);  // the server's vote extracts the same answer
  std::vector<EvalRow> rows = RunEvalWith(problems, settings, base, tmpl, regex, concurrency, generate);
  std::fputs(FormatTable(rows).c_str(), stdout);
  if (f.Has("json")) std::ofstream(f.Get("json")) << FormatJson(rows);
  if (f.Has("plot")) {
    std::ofstream(f.Get("plot")) << FormatSvg(rows, "chorus eval: " + f.Get("dataset") + " (" +
                                                        std::to_string(problems.size()) + " problems)");
  }
  return 0;
}

}  // namespace chorus::client
