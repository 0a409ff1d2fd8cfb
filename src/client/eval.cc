// chorus eval's pure parts: the dataset, answer extraction and scoring, and the loop over
// settings (RunEvalWith). eval_report.cc formats the rows; eval_cli.cc is the command line.
#include "eval.h"

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

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
    if (j.is_discarded() || !j.is_object() || !j.contains("question") ||
        !j["question"].is_string() || !j.contains("answer")) {
      *error = "line " + std::to_string(no) +
               ": expected {\"question\": string, \"answer\": string or number}";
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
    if (c == ',' && !out.empty() && std::isdigit(static_cast<unsigned char>(out.back())) &&
        i + 1 < s.size() && std::isdigit(static_cast<unsigned char>(s[i + 1]))) {
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
      for (auto it = std::sregex_iterator(text.begin(), text.end(), re);
           it != std::sregex_iterator(); ++it) {
        last = *it;
        found = true;
      }
      if (found) {
        return NormalizeAnswer(last.size() > 1 && last[1].matched ? last[1].str() : last[0].str());
      }
      return "";
    } catch (const std::regex_error&) {
      return "";
    }
  }
  static const std::regex number(R"(-?\d[\d,]*(\.\d+)?)");
  std::string found;
  for (auto it = std::sregex_iterator(text.begin(), text.end(), number);
       it != std::sregex_iterator(); ++it) {
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
  if (max_agents > 0) {
    return "elastic " + std::to_string(min_agents) + "-" + std::to_string(max_agents) + " " + merge;
  }
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

pb::GenerateRequest EvalRequest(const pb::GenerateRequest& base, const EvalSetting& s,
                                const std::string& prompt) {
  pb::GenerateRequest req = base;
  req.set_prompt(prompt);
  auto* r = req.mutable_reasoning();
  std::string upper;
  for (char c : s.merge) {
    upper.push_back(static_cast<char>(std::toupper(static_cast<unsigned char>(c))));
  }
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

std::vector<EvalRow> RunEvalWith(
    const std::vector<EvalProblem>& problems, const std::vector<EvalSetting>& settings,
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
    std::fprintf(stderr, "[eval] %-24s accuracy %.1f%%\n", s.Label().c_str(),
                 100 * rows.back().accuracy);
  }
  return rows;
}

}  // namespace chorus::client
