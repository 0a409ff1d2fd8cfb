#include "chorus/sampling/sampler.h"

#include <algorithm>
#include <cmath>
#include <unordered_map>

namespace chorus {

static uint64_t SplitMix64(uint64_t& x) {
  uint64_t z = (x += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

static uint64_t Rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

Rng::Rng(uint64_t seed) {
  for (auto& s : s_) s = SplitMix64(seed);
}

uint64_t Rng::Next() {
  const uint64_t result = Rotl(s_[1] * 5, 7) * 9;
  const uint64_t t = s_[1] << 17;
  s_[2] ^= s_[0];
  s_[3] ^= s_[1];
  s_[1] ^= s_[2];
  s_[0] ^= s_[3];
  s_[2] ^= t;
  s_[3] = Rotl(s_[3], 45);
  return result;
}

double Rng::Uniform() { return static_cast<double>(Next() >> 11) * 0x1.0p-53; }

float TokenLogprob(std::span<const float> logits, int32_t token) {
  double max = -INFINITY;
  for (float l : logits) max = std::max(max, static_cast<double>(l));
  double sum = 0;
  for (float l : logits) sum += std::exp(static_cast<double>(l) - max);
  return static_cast<float>(static_cast<double>(logits[token]) - max - std::log(sum));
}

Sampler::Sampler(const SamplingParams& params) : params_(params), rng_(params.seed) {}

bool Sampler::penalized() const {
  const SamplingParams& p = params_;
  return p.penalty_last_n != 0 && (p.repetition_penalty != 1.0f || p.presence_penalty != 0.0f ||
                                   p.frequency_penalty != 0.0f);
}

RowSampling Sampler::NextRow(int32_t row) {
  RowSampling r;
  r.temperature = params_.temperature;
  r.top_k = params_.top_k;
  r.top_p = params_.top_p;
  r.min_p = params_.min_p;
  r.uniform = params_.temperature > 0.0f ? rng_.Uniform() : 0.0;  // greedy draws nothing
  r.row = row;
  return r;
}

SampledToken Sampler::Sample(std::span<const float> logits, std::span<const int32_t> history) {
  const int32_t vocab = static_cast<int32_t>(logits.size());
  const SamplingParams& p = params_;
  std::span<const float> processed = logits;
  if (penalized() && !history.empty()) {
    work_.assign(logits.begin(), logits.end());
    const size_t window = p.penalty_last_n < 0
                              ? history.size()
                              : std::min(history.size(), static_cast<size_t>(p.penalty_last_n));
    std::unordered_map<int32_t, int> counts;
    for (size_t i = history.size() - window; i < history.size(); ++i) {
      if (history[i] >= 0 && history[i] < vocab) ++counts[history[i]];
    }
    for (const auto& [tok, count] : counts) {
      float& l = work_[tok];
      if (p.repetition_penalty != 1.0f) {
        l = l > 0 ? l / p.repetition_penalty : l * p.repetition_penalty;
      }
      l -= p.presence_penalty + p.frequency_penalty * static_cast<float>(count);
    }
    processed = work_;
  }
  return rule_.Sample(processed, logits, NextRow(0));
}

SampledToken RowSampler::Sample(std::span<const float> processed, std::span<const float> raw,
                                const RowSampling& p) {
  SampledToken out;
  if (p.temperature <= 0.0f) {
    out.token = static_cast<int32_t>(std::max_element(processed.begin(), processed.end()) -
                                     processed.begin());
  } else if (p.top_k <= 0 && p.top_p >= 1.0f && p.min_p <= 0.0f) {
    out.token = SampleTemperature(processed, p);
  } else {
    out.token = SampleFiltered(processed, p);
  }
  out.logprob = TokenLogprob(raw, out.token);
  return out;
}

int32_t RowSampler::SampleTemperature(std::span<const float> processed, const RowSampling& p) {
  const int32_t vocab = static_cast<int32_t>(processed.size());
  const float inv_t = 1.0f / p.temperature;
  const float max = *std::max_element(processed.begin(), processed.end()) * inv_t;
  work_.resize(vocab);
  double total = 0;
  for (int32_t i = 0; i < vocab; ++i) total += work_[i] = std::exp(processed[i] * inv_t - max);
  const double r = p.uniform * total;
  double cum = 0;
  for (int32_t i = 0; i < vocab; ++i) {
    cum += work_[i];
    if (r < cum) return i;
  }
  return vocab - 1;
}

int32_t RowSampler::SampleFiltered(std::span<const float> processed, const RowSampling& p) {
  const int32_t vocab = static_cast<int32_t>(processed.size());
  cand_.resize(vocab);
  for (int32_t i = 0; i < vocab; ++i) cand_[i] = {processed[i] / p.temperature, i};
  auto by_logit = [](const auto& a, const auto& b) {
    return a.first > b.first || (a.first == b.first && a.second < b.second);
  };
  size_t keep = cand_.size();
  if (p.top_k > 0 && static_cast<size_t>(p.top_k) < keep) {
    keep = static_cast<size_t>(p.top_k);
    std::partial_sort(cand_.begin(), cand_.begin() + keep, cand_.end(), by_logit);
  } else {
    std::sort(cand_.begin(), cand_.end(), by_logit);
  }
  cand_.resize(keep);
  // Softmax over the kept candidates (sorted descending).
  const double max = cand_[0].first;
  prob_.resize(keep);
  double sum = 0;
  for (size_t i = 0; i < keep; ++i) sum += prob_[i] = std::exp(cand_[i].first - max);
  for (double& x : prob_) x /= sum;
  if (p.top_p < 1.0f) {
    double cum = 0;
    size_t n = 0;
    while (n < keep) {
      cum += prob_[n++];
      if (cum >= p.top_p) break;
    }
    keep = n;
  }
  if (p.min_p > 0.0f) {
    const double floor = p.min_p * prob_[0];
    size_t n = 1;
    while (n < keep && prob_[n] >= floor) ++n;
    keep = n;
  }
  // Draw by inverse CDF over the kept tokens in vocabulary order (the CUDA sampling kernel
  // uses the same rule, so one uniform gives one token on either device).
  kept_.clear();
  for (size_t i = 0; i < keep; ++i) kept_.push_back({cand_[i].second, prob_[i]});
  std::sort(kept_.begin(), kept_.end());
  double total = 0;
  for (const auto& k : kept_) total += k.second;
  const double r = p.uniform * total;
  double cum = 0;
  for (const auto& k : kept_) {
    cum += k.second;
    if (r < cum) return k.first;
  }
  return kept_.back().first;
}

}  // namespace chorus
