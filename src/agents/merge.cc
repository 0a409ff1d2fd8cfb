#include "chorus/agents/merge.h"

#include <re2/re2.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <map>

#include "chorus/core/str_cat.h"

namespace chorus {
namespace {

std::string LastNumber(std::string_view t) {
  // Scan backwards for the last run of digits (with an optional sign, decimal point, commas).
  int end = static_cast<int>(t.size()) - 1;
  while (end >= 0 && !std::isdigit(static_cast<unsigned char>(t[end]))) --end;
  if (end < 0) return "";
  int begin = end;
  while (begin > 0 && (std::isdigit(static_cast<unsigned char>(t[begin - 1])) ||
                       t[begin - 1] == '.' || t[begin - 1] == ',')) {
    --begin;
  }
  if (begin > 0 && t[begin - 1] == '-') --begin;
  std::string n;
  for (int i = begin; i <= end; ++i) {
    if (t[i] != ',') n.push_back(t[i]);
  }
  while (!n.empty() && n.front() == '.') n.erase(0, 1);
  return n;
}

}  // namespace

std::string NormalizeAnswer(std::string_view s) {
  std::string out;
  bool space = false;
  for (char c : s) {
    if (std::isspace(static_cast<unsigned char>(c))) {
      space = !out.empty();
      continue;
    }
    if (space) out.push_back(' ');
    space = false;
    out.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
  }
  while (!out.empty() && out.back() == '.') out.pop_back();
  return out;
}

std::string ExtractAnswer(std::string_view text, const re2::RE2* re) {
  if (re != nullptr) {
    re2::StringPiece groups[2];
    const int n = std::min(re->NumberOfCapturingGroups() + 1, 2);
    if (re->Match(re2::StringPiece(text.data(), text.size()), 0, text.size(), RE2::UNANCHORED,
                  groups, n)) {
      const re2::StringPiece g = n == 2 && groups[1].data() != nullptr ? groups[1] : groups[0];
      return NormalizeAnswer(std::string_view(g.data(), g.size()));
    }
  }
  const size_t boxed = text.rfind("\\boxed{");
  if (boxed != std::string_view::npos) {
    int depth = 1;
    size_t i = boxed + 7;
    for (size_t j = i; j < text.size(); ++j) {
      if (text[j] == '{') ++depth;
      if (text[j] == '}' && --depth == 0) return NormalizeAnswer(text.substr(i, j - i));
    }
  }
  std::string lower(text);
  for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  for (std::string_view marker : {"answer is", "answer:"}) {
    const size_t at = lower.rfind(marker);
    if (at != std::string::npos) {
      std::string_view rest = text.substr(at + marker.size());
      const size_t eol = rest.find('\n');
      if (eol != std::string_view::npos) rest = rest.substr(0, eol);
      const std::string a = NormalizeAnswer(rest);
      if (!a.empty()) return a;
    }
  }
  const std::string num = LastNumber(text);
  if (!num.empty()) return num;
  return NormalizeAnswer(text);
}

double TailWindowMeanLogprob(const std::vector<float>& lp, int window) {
  if (lp.empty()) return 0;
  const size_t n = std::min(lp.size(), static_cast<size_t>(std::max(1, window)));
  double sum = 0;
  for (size_t i = lp.size() - n; i < lp.size(); ++i) sum += lp[i];
  return sum / n;
}

double DraftConfidence(const std::vector<float>& lp, int window) {
  if (lp.empty()) return 1.0;
  const size_t w = std::min(lp.size(), static_cast<size_t>(std::max(1, window)));
  double sum = 0;
  for (size_t i = 0; i < w; ++i) sum += lp[i];
  double lowest = sum / w;
  for (size_t i = w; i < lp.size(); ++i) {
    sum += lp[i] - lp[i - w];
    lowest = std::min(lowest, sum / w);
  }
  return std::exp(lowest);
}

// With an answer regex, a draft it does not match (cut by the budget or max_tokens before its
// answer) has nothing to vote for while another eligible draft has an answer: false for those
// drafts, true for the rest.
bool HasAnswer(std::string_view text, const re2::RE2* re) {
  return re == nullptr || re2::RE2::PartialMatch(re2::StringPiece(text.data(), text.size()), *re);
}

template <typename Eligible>
static std::vector<bool> AnsweredDrafts(const ReasoningParams& params,
                                        const std::vector<DraftResult>& drafts, Eligible eligible) {
  std::vector<bool> answered(drafts.size(), true);
  if (params.answer_re == nullptr) return answered;
  bool any = false;
  for (size_t i = 0; i < drafts.size(); ++i) {
    answered[i] = HasAnswer(drafts[i].text, params.answer_re.get());
    any |= answered[i] && eligible(drafts[i]);
  }
  if (!any) answered.assign(drafts.size(), true);
  return answered;
}

bool VoteIsDecided(const std::vector<std::string>& answers, int unfinished) {
  std::map<std::string, int> counts;
  for (const auto& a : answers) ++counts[a];
  int first = 0, second = 0;
  for (const auto& [a, c] : counts) {
    if (c > first) {
      second = first;
      first = c;
    } else if (c > second) {
      second = c;
    }
  }
  return first > second + unfinished;
}

MergeInfo MergeDrafts(MergeStrategy strategy, const ReasoningParams& params,
                      std::vector<DraftResult>& drafts) {
  MergeInfo info;
  info.strategy = strategy == MergeStrategy::kSynthesize ? MergeStrategy::kVote : strategy;
  if (drafts.empty()) return info;
  bool any_tokens = false;
  for (const auto& d : drafts) any_tokens |= d.num_tokens > 0;
  auto eligible = [&](const DraftResult& d) { return !any_tokens || d.num_tokens > 0; };
  // Higher mean logprob wins; then the lower agent index.
  auto better = [](const DraftResult& a, const DraftResult& b) {
    return a.mean_logprob() > b.mean_logprob() ||
           (a.mean_logprob() == b.mean_logprob() && a.agent < b.agent);
  };

  if (info.strategy == MergeStrategy::kBestLogprob || info.strategy == MergeStrategy::kFirst) {
    int best = -1;
    for (size_t i = 0; i < drafts.size(); ++i) {
      if (!eligible(drafts[i])) continue;
      if (info.strategy == MergeStrategy::kFirst) {
        // The earliest to finish on its own (not cut by budget, cancel or consensus).
        const auto natural = [](const DraftResult& d) {
          return d.finish == FinishReason::kEndOfText || d.finish == FinishReason::kStop ||
                 d.finish == FinishReason::kLength || d.finish == FinishReason::kContext;
        };
        if (best < 0 || (natural(drafts[i]) && !natural(drafts[best])) ||
            (natural(drafts[i]) == natural(drafts[best]) &&
             (drafts[i].finish_ms < drafts[best].finish_ms ||
              (drafts[i].finish_ms == drafts[best].finish_ms &&
               better(drafts[i], drafts[best]))))) {
          best = static_cast<int>(i);
        }
      } else if (best < 0 || better(drafts[i], drafts[best])) {
        best = static_cast<int>(i);
      }
    }
    info.winner = drafts[best].agent;
    return info;
  }

  // VOTE / CONFIDENCE. First the drafts with an answer (when a regex says what one is), then,
  // for CONFIDENCE, the confident ones among them.
  const bool weighted = info.strategy == MergeStrategy::kConfidence;
  const std::vector<bool> answered = AnsweredDrafts(params, drafts, eligible);
  bool any_confident = false;
  for (size_t i = 0; i < drafts.size(); ++i) {
    DraftResult& d = drafts[i];
    d.answer = ExtractAnswer(d.text, params.answer_re.get());
    d.confidence = DraftConfidence(d.logprobs, params.confidence_window);
    any_confident |= eligible(d) && answered[i] && d.finish != FinishReason::kLowConfidence;
  }
  std::map<std::string, double> votes;
  std::map<std::string, int> best_of;  // answer -> index of its best draft
  for (size_t i = 0; i < drafts.size(); ++i) {
    const DraftResult& d = drafts[i];
    if (!eligible(d) || !answered[i]) continue;
    if (weighted && any_confident && d.finish == FinishReason::kLowConfidence) continue;
    votes[d.answer] += weighted ? d.confidence : 1.0;
    auto it = best_of.find(d.answer);
    if (it == best_of.end() || better(d, drafts[it->second]))
      best_of[d.answer] = static_cast<int>(i);
  }
  std::string top;
  bool have_top = false;
  for (const auto& [answer, v] : votes) {
    if (!have_top) {
      top = answer;
      have_top = true;
      continue;
    }
    const double tv = votes[top];
    if (v > tv || (v == tv && better(drafts[best_of[answer]], drafts[best_of[top]]))) top = answer;
  }
  info.votes = votes;
  info.winner = drafts[best_of[top]].agent;
  return info;
}

}  // namespace chorus
