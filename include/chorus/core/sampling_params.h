// What a request asks of its sampler (sampling/sampler.h applies it). A plain struct in core so
// that request types need not depend on the sampling module.
#pragma once

#include <cstdint>

namespace chorus {

struct SamplingParams {
  float temperature = 1.0f;         // <= 0 means greedy
  int top_k = 0;                    // 0 = off
  float top_p = 1.0f;               // 1 = off
  float min_p = 0.0f;               // 0 = off
  float repetition_penalty = 1.0f;  // 1 = off; divides positive logits, multiplies negative ones
  float presence_penalty = 0.0f;    // subtracted once from each token seen in the window
  float frequency_penalty = 0.0f;   // subtracted per occurrence in the window
  int penalty_last_n = 64;          // window of recent tokens the penalties look at
  uint64_t seed = 0;
};

}  // namespace chorus
