// chorus-bench-model: prefill and decode throughput of the CPU forward pass on a GGUF model.
//
//   chorus-bench-model --model FILE [--backend cpu|cuda] [--threads N] [--prompt-tokens P] [--decode-tokens D]
//                      [--batch B] [--repeats R]
// Prefill: one forward over P prompt tokens (tokens/s = P / time). Decode: D single-token steps
// for each of B sequences decoded together in one batched forward per step (tokens/s counts
// all B sequences). Reports the best of R repeats; prints one JSON line per measurement.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <thread>

#include "chorus/backends/cpu_backend.h"
#include "chorus/backends/cuda_backend.h"
#include "chorus/model/model.h"
#include "chorus/model/transformer.h"
#include "../src/tools/flags.h"

namespace chorus {
namespace {

double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

int Run(int argc, char** argv) {
  tools::Flags flags({"model", "threads", "prompt-tokens", "decode-tokens", "batch", "repeats", "backend"},
                     {"int8-activations"});
  std::string error;
  int threads, prompt, decode, batch, repeats;
  if (!flags.Parse(argc, argv, &error) ||
      !flags.GetNumber("threads", static_cast<int>(std::thread::hardware_concurrency()), 1, 256, &threads, &error) ||
      !flags.GetNumber("prompt-tokens", 128, 1, 1 << 16, &prompt, &error) ||
      !flags.GetNumber("decode-tokens", 32, 1, 1 << 16, &decode, &error) ||
      !flags.GetNumber("batch", 1, 1, 1024, &batch, &error) ||
      !flags.GetNumber("repeats", 3, 1, 100, &repeats, &error) || !flags.Has("model")) {
    std::fprintf(stderr, "chorus-bench-model: %s\n", error.empty() ? "--model is required" : error.c_str());
    return 1;
  }
  auto backend_or = flags.Has("int8-activations")
                        ? absl::StatusOr<std::unique_ptr<Backend>>(CreateCpuBackend(threads, true))
                        : CreateBackend(flags.Get("backend", "cpu"), threads);
  if (!backend_or.ok()) {
    std::fprintf(stderr, "chorus-bench-model: %s\n", std::string(backend_or.status().message()).c_str());
    return 1;
  }
  auto backend = std::move(*backend_or);
  auto model = Model::Load(flags.Get("model"), backend.get());
  if (!model.ok()) {
    std::fprintf(stderr, "chorus-bench-model: %s\n", std::string(model.status().message()).c_str());
    return 1;
  }
  const ModelConfig& c = (*model)->config();
  constexpr int kBlock = 16;
  const int per_seq = (prompt + decode + kBlock - 1) / kBlock;
  auto kv = KvCache::Create(backend.get(), c, per_seq * batch, kBlock);
  if (!kv.ok()) return 1;
  Transformer tf(model->get(), backend.get(), kv->get());
  std::vector<float> logits;
  // Bytes a decode step must read: every weight except the embedding table (one row per token),
  // which doubles as the output matrix when the model has none of its own.
  int64_t weight_bytes = 0, step_weight_bytes = 0, embedding_bytes = 0;
  int64_t step_params = 0, embedding_params = 0;
  bool has_output = false;
  for (const auto& t : (*model)->file().tensors()) {
    weight_bytes += t.num_bytes;
    if (t.name == "token_embd.weight") {
      embedding_bytes = t.num_bytes;
      embedding_params = t.num_elements;
    } else {
      step_weight_bytes += t.num_bytes;
      step_params += t.num_elements;
    }
    has_output = has_output || t.name == "output.weight";
  }
  if (!has_output) {
    step_weight_bytes += embedding_bytes;
    step_params += embedding_params;
  }
  // Prefill work: 2 flops per weight per token (the output matrix for the last token only) plus
  // causal attention (QK^T and PV over P^2 / 2 pairs per head).
  const int64_t output_params = static_cast<int64_t>(c.vocab_size) * c.dim;
  const double prefill_flops = 2.0 * static_cast<double>(step_params - output_params) * prompt +
                               2.0 * output_params + 2.0 * 2.0 * c.n_layers * c.q_dim() * prompt * prompt / 2.0;
  // KV cache read by attention per decode step, averaged over the steps.
  const double kv_bytes_per_step = 2.0 * c.n_layers * c.kv_dim() * backend->KvBytesPerValue() * batch *
                                   (prompt + (decode - 1) / 2.0);

  ForwardBatch b;
  b.max_blocks_per_seq = per_seq;
  for (int i = 0; i < per_seq * batch; ++i) b.block_tables.push_back(i);
  double best_prefill = 1e30, best_decode = 1e30;
  for (int r = 0; r < repeats; ++r) {
    // Prefill every sequence's prompt (timed for sequence 0 only).
    for (int s = 0; s < batch; ++s) {
      b.tokens.clear(); b.positions.clear(); b.seq_of_token.clear();
      for (int t = 0; t < prompt; ++t) {
        b.tokens.push_back((t * 7919 + s) % c.vocab_size);
        b.positions.push_back(t);
        b.seq_of_token.push_back(s);
      }
      b.logit_rows = {prompt - 1};
      const double t0 = Now();
      if (!tf.Forward(b, &logits).ok()) return 1;
      if (s == 0) best_prefill = std::min(best_prefill, Now() - t0);
    }
    const double t0 = Now();
    for (int step = 0; step < decode; ++step) {
      b.tokens.clear(); b.positions.clear(); b.seq_of_token.clear(); b.logit_rows.clear();
      for (int s = 0; s < batch; ++s) {
        b.tokens.push_back((step * 31 + s) % c.vocab_size);
        b.positions.push_back(prompt + step);
        b.seq_of_token.push_back(s);
        b.logit_rows.push_back(s);
      }
      if (!tf.Forward(b, &logits).ok()) return 1;
    }
    best_decode = std::min(best_decode, Now() - t0);
  }
  const CudaGraphStats graphs = GetCudaGraphStats(*backend);
  std::printf("{\"model\": \"%s\", \"backend\": \"%s\", \"threads\": %d, \"weight_bytes\": %lld, "
              "\"step_weight_bytes\": %lld, \"kv_bytes_per_step\": %.0f, \"prompt_tokens\": %d, "
              "\"prefill_tokens_per_s\": %.1f, \"prefill_tflops\": %.2f, \"batch\": %d, \"decode_steps\": %d, "
              "\"decode_tokens_per_s\": %.2f, \"decode_step_ms\": %.3f, "
              "\"decode_weight_gb_per_s\": %.2f, \"graphs_captured\": %lld, \"graphs_replayed\": %lld, "
              "\"dequantized_bytes\": %lld}\n",
              flags.Get("model").c_str(), std::string(backend->name()).c_str(), threads,
              static_cast<long long>(weight_bytes), static_cast<long long>(step_weight_bytes), kv_bytes_per_step,
              prompt, prompt / best_prefill, prefill_flops / best_prefill / 1e12, batch, decode, decode * batch / best_decode,
              best_decode / decode * 1e3, step_weight_bytes * decode / best_decode / 1e9,
              static_cast<long long>(graphs.captured), static_cast<long long>(graphs.replayed),
              static_cast<long long>(graphs.dequantized_bytes));
  return 0;
}

}  // namespace
}  // namespace chorus

int main(int argc, char** argv) { return chorus::Run(argc, argv); }
