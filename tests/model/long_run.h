// Test helper: prefill a long random prompt in chunks, then decode greedily, keeping the logits
// of the last prompt row and of every decode step (for comparison with reference_forward.h).
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <vector>

#include "chorus/gguf/random_model.h"
#include "chorus/model/model.h"
#include "chorus/model/transformer.h"

namespace chorus::testing {

// The small model the long-context tests run (CPU and CUDA): Llama 3's rope base, so that
// most pairs have long wavelengths and rope details matter at 1,000+ positions.
inline RandomModelSpec LongSpec(const std::string& arch) {
  RandomModelSpec s;
  s.arch = arch;
  s.dim = 64;
  s.n_heads = 4;
  s.n_kv_heads = 2;
  s.ffn_dim = 96;
  s.n_layers = 2;
  s.vocab_size = 300;
  s.context_length = 2048;
  s.rope_base = 500000.0f;  // Llama 3's base: most pairs have long wavelengths
  s.seed = 17;
  return s;
}

struct LongRun {
  std::vector<int32_t> tokens;             // prompt + generated
  std::vector<std::vector<float>> logits;  // at positions prompt-1 .. end-1
};

// Prefills `prompt_len` random tokens in chunks of 256 and decodes `steps` greedy tokens.
inline LongRun RunLong(Model* model, Backend* backend, int prompt_len, int steps) {
  const ModelConfig& c = model->config();
  constexpr int kBlock = 16;
  const int blocks = (prompt_len + steps) / kBlock + 1;
  auto kv = KvCache::Create(backend, c, blocks, kBlock);
  EXPECT_TRUE(kv.ok());
  Transformer tf(model, backend, kv->get());
  LongRun run;
  std::mt19937 rng(5);
  for (int t = 0; t < prompt_len; ++t)
    run.tokens.push_back(static_cast<int32_t>(rng() % c.vocab_size));
  ForwardBatch b;
  b.max_blocks_per_seq = blocks;
  for (int i = 0; i < blocks; ++i) b.block_tables.push_back(blocks - 1 - i);  // scrambled
  std::vector<float> logits;
  for (int start = 0; start < prompt_len; start += 256) {
    const int end = std::min(prompt_len, start + 256);
    b.tokens.assign(run.tokens.begin() + start, run.tokens.begin() + end);
    b.positions.clear();
    for (int t = start; t < end; ++t) b.positions.push_back(t);
    b.seq_of_token.assign(end - start, 0);
    b.logit_rows = {end - start - 1};
    EXPECT_TRUE(tf.Forward(b, &logits).ok());
  }
  for (int s = 0; s <= steps; ++s) {
    run.logits.push_back(logits);
    if (s == steps) break;
    const int32_t next =
        static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
    run.tokens.push_back(next);
    b.tokens = {next};
    b.positions = {static_cast<int32_t>(run.tokens.size()) - 1};
    b.seq_of_token = {0};
    b.logit_rows = {0};
    EXPECT_TRUE(tf.Forward(b, &logits).ok());
  }
  return run;
}

// Greedy continuation of `prompt` (prefilled in chunks of 512 rows).
inline std::vector<int32_t> Greedy(Model* model, Backend* backend,
                                   const std::vector<int32_t>& prompt, int steps) {
  constexpr int kBlock = 16;
  const int blocks = (static_cast<int>(prompt.size()) + steps) / kBlock + 1;
  auto kv = KvCache::Create(backend, model->config(), blocks, kBlock);
  EXPECT_TRUE(kv.ok());
  Transformer tf(model, backend, kv->get());
  ForwardBatch b;
  b.max_blocks_per_seq = blocks;
  for (int i = 0; i < blocks; ++i) b.block_tables.push_back(i);
  std::vector<float> logits;
  std::vector<int32_t> out;
  const int n = static_cast<int>(prompt.size());
  for (int start = 0; start < n; start += 512) {
    const int end = std::min(n, start + 512);
    b.tokens.assign(prompt.begin() + start, prompt.begin() + end);
    b.positions.clear();
    for (int t = start; t < end; ++t) b.positions.push_back(t);
    b.seq_of_token.assign(end - start, 0);
    b.logit_rows = {end - start - 1};
    EXPECT_TRUE(tf.Forward(b, &logits).ok());
  }
  for (int s = 0; s < steps; ++s) {
    const int32_t next =
        static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
    out.push_back(next);
    b.tokens = {next};
    b.positions = {n + s};
    b.seq_of_token = {0};
    b.logit_rows = {0};
    EXPECT_TRUE(tf.Forward(b, &logits).ok());
  }
  return out;
}

}  // namespace chorus::testing
