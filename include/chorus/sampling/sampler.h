// Token sampling: penalties, temperature, top-k, top-p, min-p, a seeded per-sequence RNG, and
// the chosen token's logprob. Same seed and same logits give the same tokens on every machine
// (the RNG and its float conversion are our own, not the standard library's).
//
// Order: penalties -> (temperature <= 0: greedy argmax) -> temperature -> top-k -> softmax ->
// top-p -> min-p -> draw: one uniform number, inverse CDF over the kept tokens in vocabulary
// order (the rule kernels/sampling.cu follows too). The reported logprob is log p(token) under the
// raw logits (temperature 1, no penalties): the model's own confidence, comparable across agents.
// Not thread-safe: one Sampler per sequence.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "chorus/core/sampling_params.h"

namespace chorus {

// xoshiro256** seeded through splitmix64.
class Rng {
 public:
  explicit Rng(uint64_t seed);
  uint64_t Next();
  double Uniform();  // [0, 1) with 53 random bits

 private:
  uint64_t s_[4];
};

struct SampledToken {
  int32_t token = -1;
  float logprob = 0;
};

// One row of sampling after penalties: the rule above from temperature on, with the uniform
// number already drawn. Backends sample rows of logits they hold with it (CPU: RowSampler; CUDA:
// kernels/sampling.cu), so the logits need not travel to the host.
struct RowSampling {
  float temperature = 1.0f;  // <= 0: greedy
  int top_k = 0;
  float top_p = 1.0f;
  float min_p = 0.0f;
  double uniform = 0.0;  // in [0, 1); unused when greedy
  int32_t row = 0;       // which row of the logits matrix
};

// The rule on the host. `processed`: logits after penalties; `raw`: the logits the logprob is
// reported under (the same span when there are no penalties).
class RowSampler {
 public:
  SampledToken Sample(std::span<const float> processed, std::span<const float> raw,
                      const RowSampling& r);

 private:
  // Plain temperature sampling (no top-k/top-p/min-p): inverse CDF over the softmax, no sort.
  int32_t SampleTemperature(std::span<const float> processed, const RowSampling& p);
  // top-k, then top-p and min-p over the sorted candidates, then the inverse CDF.
  int32_t SampleFiltered(std::span<const float> processed, const RowSampling& p);

  std::vector<float> work_;
  std::vector<std::pair<float, int32_t>> cand_;
  std::vector<std::pair<int32_t, double>> kept_;
  std::vector<double> prob_;
};

class Sampler {
 public:
  explicit Sampler(const SamplingParams& params);
  // history: the sequence's tokens so far (prompt and generated), for the penalties.
  SampledToken Sample(std::span<const float> logits, std::span<const int32_t> history);
  // Whether penalties may change the logits (then only Sample applies them).
  bool penalized() const;
  // For sampling elsewhere (a backend's SampleRows): this sampler's rule for logits row `row`,
  // with the uniform number that Sample would have drawn now (drawn from the RNG here, so the
  // sequence of tokens is the same either way).
  RowSampling NextRow(int32_t row);

 private:
  SamplingParams params_;
  Rng rng_;
  std::vector<float> work_;
  RowSampler rule_;
};

// log softmax(logits)[token], computed in double.
float TokenLogprob(std::span<const float> logits, int32_t token);

}  // namespace chorus
