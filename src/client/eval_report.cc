// chorus eval's outputs: the table on stdout, the --json rows and the --plot SVG.
#include <algorithm>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "eval.h"

namespace chorus::client {
using json = nlohmann::json;

std::string FormatTable(const std::vector<EvalRow>& rows) {
  std::ostringstream o;
  char buf[512];
  std::snprintf(buf, sizeof(buf), "%-24s %5s %9s %15s %9s %9s %9s %9s %8s %7s %6s %6s\n", "setting",
                "n", "accuracy", "95% interval", "lat mean", "lat p50", "lat p99", "tokens",
                "early", "cut", "agents", "errors");
  o << buf;
  for (const EvalRow& r : rows) {
    std::snprintf(
        buf, sizeof(buf),
        "%-24s %5d %8.1f%% [%5.1f, %5.1f]%% %9.1f %9.1f %9.1f %9.1f %8.2f %7.3f %6.2f %6d\n",
        r.setting.Label().c_str(), r.n, 100 * r.accuracy, 100 * r.ci.lo, 100 * r.ci.hi,
        r.latency_mean, r.latency_p50, r.latency_p99, r.tokens_mean, r.early_stopped_mean,
        r.budget_cut_fraction, r.agents_mean, r.errors);
    o << buf;
  }
  o << "(latency in ms, client-side; tokens = completion tokens of all drafts per request; early = "
       "drafts "
       "stopped early per request; cut = fraction of requests the budget cut; agents = drafts "
       "run)\n";
  return o.str();
}

std::string FormatJson(const std::vector<EvalRow>& rows) {
  json out = json::array();
  for (const EvalRow& r : rows) {
    out.push_back(
        {{"setting", r.setting.Label()},
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
    << "\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" "
       "fill=\"white\"/>\n";
  std::string t = title;
  for (char& c : t) {
    if (c == '<' || c == '>' || c == '&') c = ' ';
  }
  o << "<text x=\"" << L << "\" y=\"22\" font-size=\"14\">" << t << "</text>\n";
  o << "<line x1=\"" << L << "\" y1=\"" << H - B << "\" x2=\"" << W - R << "\" y2=\"" << H - B
    << "\" stroke=\"black\"/>\n";
  o << "<line x1=\"" << L << "\" y1=\"" << T << "\" x2=\"" << L << "\" y2=\"" << H - B
    << "\" stroke=\"black\"/>\n";
  for (int i = 0; i <= 5; ++i) {
    const double acc = i / 5.0, ms = xmax * i / 5.0;
    o << "<text x=\"" << L - 8 << "\" y=\"" << Y(acc) + 4 << "\" text-anchor=\"end\">"
      << static_cast<int>(acc * 100) << "%</text>\n";
    o << "<line x1=\"" << L << "\" y1=\"" << Y(acc) << "\" x2=\"" << W - R << "\" y2=\"" << Y(acc)
      << "\" stroke=\"#ddd\"/>\n";
    o << "<text x=\"" << X(ms) << "\" y=\"" << H - B + 18 << "\" text-anchor=\"middle\">"
      << static_cast<int>(ms) << "</text>\n";
  }
  o << "<text x=\"" << (L + W - R) / 2 << "\" y=\"" << H - 10
    << "\" text-anchor=\"middle\">p50 latency (ms)</text>\n";
  o << "<text x=\"16\" y=\"" << (T + H - B) / 2 << "\" transform=\"rotate(-90 16 "
    << (T + H - B) / 2 << ")\" text-anchor=\"middle\">accuracy (95% interval)</text>\n";
  static const char* kColors[] = {"#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"};
  std::vector<std::string> merges;
  for (const EvalRow& r : rows) {
    if (std::find(merges.begin(), merges.end(), r.setting.merge) == merges.end()) {
      merges.push_back(r.setting.merge);
    }
  }
  for (const EvalRow& r : rows) {
    const size_t mi = std::find(merges.begin(), merges.end(), r.setting.merge) - merges.begin();
    const char* color =
        r.setting.agents == 1 && r.setting.max_agents == 0 ? "black" : kColors[mi % 6];
    const double x = X(r.latency_p50);
    o << "<line x1=\"" << x << "\" y1=\"" << Y(r.ci.lo) << "\" x2=\"" << x << "\" y2=\""
      << Y(r.ci.hi) << "\" stroke=\"" << color << "\"/>\n";
    o << "<circle cx=\"" << x << "\" cy=\"" << Y(r.accuracy) << "\" r=\"4\" fill=\"" << color
      << "\"/>\n";
    o << "<text x=\"" << x + 6 << "\" y=\"" << Y(r.accuracy) - 6 << "\" fill=\"" << color << "\">"
      << r.setting.Label() << "</text>\n";
  }
  int ly = T;
  for (size_t i = 0; i < merges.size(); ++i, ly += 18) {
    o << "<circle cx=\"" << W - R + 20 << "\" cy=\"" << ly << "\" r=\"4\" fill=\"" << kColors[i % 6]
      << "\"/>\n";
    o << "<text x=\"" << W - R + 30 << "\" y=\"" << ly + 4 << "\">" << merges[i] << "</text>\n";
  }
  o << "</svg>\n";
  return o.str();
}

}  // namespace chorus::client
