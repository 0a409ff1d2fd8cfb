// chorus-bench-model: prefill and decode throughput of the CPU forward pass on a GGUF model.
//
//   chorus-bench-model --model FILE [--backend cpu|cuda] [--threads N] [--prompt-tokens P]
//                      [--decode-tokens D] [--batch B] [--repeats R] [--context C] [--exact]
//                      [--no-pack] [--host-logits | --backend-sampling]
//   chorus-bench-model --model FILE --logit-diff [--prompt-tokens P] [--threads N]
// Prefill: one forward over P prompt tokens (tokens/s = P / time). Decode: D single-token steps
// for each of B sequences decoded together in one batched forward per step (tokens/s counts
// all B sequences), starting at position max(P, C): --context 4096 times decode steps whose
// attention reads 4096 cached positions without prefilling them (the cost does not depend on
// the cached values). Reports the best of R repeats; prints one JSON line per measurement.
// Decode steps on a GPU backend sample each sequence's next token there (ForwardSampled, as the
// serving engine does: no logits copied to the host, whose size would distort batch ratios);
// the CPU backend's steps copy the logits out and sample nothing (llama-bench's measure).
// --host-logits / --backend-sampling force either.
// The CPU backend runs quantized weights with int8 activations unless --exact (the server's
// default, cpu_int8_activations); --no-pack keeps them out of the packed copies (the row
// kernels over the GGUF layout: the A/B for the packed kernels). --logit-diff compares the two
// paths' logits over the P prompt positions instead: largest difference relative to the largest
// exact logit, and how often the two agree on the top token.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "../src/tools/flags.h"
#include "chorus/backends/cpu_backend.h"
#include "chorus/backends/cuda_backend.h"
#include "chorus/model/model.h"
#include "chorus/model/transformer.h"

namespace chorus {
namespace {

double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

struct Args {
  int threads = 1, prompt = 0, decode = 0, batch = 1, repeats = 1, context = 0;
  bool backend_sampling = false;  // decode: sample on the backend instead of copying logits
};

// Bytes a decode step must read: every weight except the embedding table (one row per token),
// which doubles as the output matrix when the model has none of its own.
struct WeightStats {
  int64_t weight_bytes = 0, step_weight_bytes = 0, step_params = 0;
};

WeightStats CountWeights(const Model& model) {
  WeightStats w;
  int64_t embedding_bytes = 0, embedding_params = 0;
  bool has_output = false;
  for (const auto& t : model.file().tensors()) {
    w.weight_bytes += t.num_bytes;
    if (t.name == "token_embd.weight") {
      embedding_bytes = t.num_bytes;
      embedding_params = t.num_elements;
    } else {
      w.step_weight_bytes += t.num_bytes;
      w.step_params += t.num_elements;
    }
    has_output = has_output || t.name == "output.weight";
  }
  if (!has_output) {
    w.step_weight_bytes += embedding_bytes;
    w.step_params += embedding_params;
  }
  return w;
}

// Best (prefill of sequence 0, whole decode) seconds over the repeats, or false on an error.
bool TimeRuns(Transformer& tf, const ModelConfig& c, const Args& a, int per_seq,
              double* best_prefill, double* best_decode) {
  ForwardBatch b;
  std::vector<float> logits;
  b.max_blocks_per_seq = per_seq;
  for (int i = 0; i < per_seq * a.batch; ++i) b.block_tables.push_back(i);
  *best_prefill = *best_decode = 1e30;
  // One untimed prefill first, as llama-bench's warm-up run: the CPU backend makes its packed
  // weight copies on a matrix's first matmul and the activation buffers of a P-token forward are
  // faulted in on the first one (load and first-touch costs, not prefill speed).
  for (int t = 0; t < a.prompt; ++t) {
    b.tokens.push_back((t * 7919) % c.vocab_size);
    b.positions.push_back(t);
    b.seq_of_token.push_back(0);
  }
  b.logit_rows = {a.prompt - 1};
  if (auto st = tf.Forward(b, &logits); !st.ok()) {
    std::fprintf(stderr, "chorus-bench-model: %s\n", std::string(st.message()).c_str());
    return false;
  }
  for (int r = 0; r < a.repeats; ++r) {
    // Prefill every sequence's prompt (timed for sequence 0 only).
    for (int s = 0; s < a.batch; ++s) {
      b.tokens.clear();
      b.positions.clear();
      b.seq_of_token.clear();
      for (int t = 0; t < a.prompt; ++t) {
        b.tokens.push_back((t * 7919 + s) % c.vocab_size);
        b.positions.push_back(t);
        b.seq_of_token.push_back(s);
      }
      b.logit_rows = {a.prompt - 1};
      const double t0 = Now();
      if (auto st = tf.Forward(b, &logits); !st.ok()) {
        std::fprintf(stderr, "chorus-bench-model: %s\n", std::string(st.message()).c_str());
        return false;
      }
      if (s == 0) *best_prefill = std::min(*best_prefill, Now() - t0);
    }
    const int first = std::max(a.prompt, a.context);  // decode positions start here
    // --context: one untimed step first. Its attention reads every cached position, so the
    // never-written part of the KV cache is faulted in (the kernel zeroing fresh pages) before
    // the clock starts; in serving, those positions were written by the prefill.
    const int warmup = r == 0 && a.context > a.prompt ? 1 : 0;
    double t0 = Now();
    std::vector<RowSampling> draws(a.batch);
    std::vector<SampledToken> sampled;
    for (int s = 0; s < a.batch; ++s) {
      draws[s].temperature = 0.8f;
      draws[s].top_p = 0.95f;
      draws[s].uniform = (s + 0.5) / a.batch;
      draws[s].row = s;
    }
    for (int step = -warmup; step < a.decode; ++step) {
      if (step == 0) t0 = Now();
      b.tokens.clear();
      b.positions.clear();
      b.seq_of_token.clear();
      b.logit_rows.clear();
      for (int s = 0; s < a.batch; ++s) {
        // The token sampled by the previous step where there is one (the serving loop's data
        // dependence), else a fixed pattern.
        b.tokens.push_back(static_cast<size_t>(s) < sampled.size()
                               ? sampled[s].token
                               : ((step + 1) * 31 + s) % c.vocab_size);
        b.positions.push_back(first + std::max(step, 0));
        b.seq_of_token.push_back(s);
        b.logit_rows.push_back(s);
      }
      const absl::Status st = a.backend_sampling
                                  ? tf.ForwardSampled(b, draws, {}, &logits, &sampled)
                                  : tf.Forward(b, &logits);
      if (!st.ok()) {
        std::fprintf(stderr, "chorus-bench-model: %s\n", std::string(st.message()).c_str());
        return false;
      }
    }
    *best_decode = std::min(*best_decode, Now() - t0);
  }
  return true;
}

int Fail(std::string_view what) {
  std::fprintf(stderr, "chorus-bench-model: %.*s\n", static_cast<int>(what.size()), what.data());
  return 1;
}

// --logit-diff: the exact and int8-activation CPU paths on the same prompt; one JSON line.
int LogitDiff(const std::string& path, const Args& a) {
  std::vector<float> logits[2];
  int vocab = 0;
  for (int mode = 0; mode < 2; ++mode) {  // 0 exact, 1 int8 activations
    auto backend = CreateCpuBackend(a.threads, mode == 1);
    auto model = Model::Load(path, backend.get());
    if (!model.ok()) return Fail(std::string(model.status().message()));
    const ModelConfig& c = (*model)->config();
    vocab = c.vocab_size;
    constexpr int kBlock = 16;
    const int blocks = (a.prompt + kBlock - 1) / kBlock;
    auto kv = KvCache::Create(backend.get(), c, blocks, kBlock);
    if (!kv.ok()) return Fail(std::string(kv.status().message()));
    Transformer tf(model->get(), backend.get(), kv->get());
    ForwardBatch b;
    b.max_blocks_per_seq = blocks;
    for (int i = 0; i < blocks; ++i) b.block_tables.push_back(i);
    for (int t = 0; t < a.prompt; ++t) {
      b.tokens.push_back((t * 7919 + 1) % c.vocab_size);
      b.positions.push_back(t);
      b.seq_of_token.push_back(0);
      b.logit_rows.push_back(t);
    }
    if (auto s = tf.Forward(b, &logits[mode]); !s.ok()) return Fail(std::string(s.message()));
  }
  double worst_rel = 0, sum_rel = 0;
  int agree = 0;
  for (int r = 0; r < a.prompt; ++r) {
    const float* e = logits[0].data() + static_cast<size_t>(r) * vocab;
    const float* q = logits[1].data() + static_cast<size_t>(r) * vocab;
    double diff = 0, scale = 0;
    for (int v = 0; v < vocab; ++v) {
      diff = std::max(diff, static_cast<double>(std::fabs(e[v] - q[v])));
      scale = std::max(scale, static_cast<double>(std::fabs(e[v])));
    }
    const double rel = scale > 0 ? diff / scale : 0;
    worst_rel = std::max(worst_rel, rel);
    sum_rel += rel;
    agree += std::max_element(e, e + vocab) - e == std::max_element(q, q + vocab) - q;
  }
  std::printf(
      "{\"model\": \"%s\", \"positions\": %d, \"max_rel_logit_diff\": %.5f, "
      "\"mean_rel_logit_diff\": %.5f, \"top1_agreement\": %.4f}\n",
      path.c_str(), a.prompt, worst_rel, sum_rel / a.prompt, static_cast<double>(agree) / a.prompt);
  return 0;
}

int Run(int argc, char** argv) {
  tools::Flags flags(
      {"model", "threads", "prompt-tokens", "decode-tokens", "batch", "repeats", "backend",
       "context"},
      {"int8-activations", "exact", "logit-diff", "no-pack", "host-logits", "backend-sampling"});
  std::string error;
  Args a;
  if (!flags.Parse(argc, argv, &error) ||
      !flags.GetNumber("threads", static_cast<int>(std::thread::hardware_concurrency()), 1, 256,
                       &a.threads, &error) ||
      !flags.GetNumber("prompt-tokens", 128, 1, 1 << 16, &a.prompt, &error) ||
      !flags.GetNumber("decode-tokens", 32, 1, 1 << 16, &a.decode, &error) ||
      !flags.GetNumber("batch", 1, 1, 1024, &a.batch, &error) ||
      !flags.GetNumber("repeats", 3, 1, 100, &a.repeats, &error) ||
      !flags.GetNumber("context", 0, 0, 1 << 20, &a.context, &error) || !flags.Has("model")) {
    return Fail(error.empty() ? "--model is required" : error);
  }
  if (flags.Has("logit-diff")) return LogitDiff(flags.Get("model"), a);
  const std::string backend_name = flags.Get("backend", "cpu");
  a.backend_sampling =
      (backend_name != "cpu" || flags.Has("backend-sampling")) && !flags.Has("host-logits");
  auto backend_or = backend_name == "cpu"
                        ? absl::StatusOr<std::unique_ptr<Backend>>(CreateCpuBackend(
                              a.threads, !flags.Has("exact"), !flags.Has("no-pack")))
                        : CreateBackend(backend_name, a.threads);
  if (!backend_or.ok()) return Fail(std::string(backend_or.status().message()));
  auto backend = std::move(*backend_or);
  auto model = Model::Load(flags.Get("model"), backend.get());
  if (!model.ok()) return Fail(std::string(model.status().message()));
  const ModelConfig& c = (*model)->config();
  constexpr int kBlock = 16;
  const int per_seq = (std::max(a.prompt, a.context) + a.decode + kBlock - 1) / kBlock;
  auto kv = KvCache::Create(backend.get(), c, per_seq * a.batch, kBlock);
  if (!kv.ok()) return Fail(std::string(kv.status().message()));
  Transformer tf(model->get(), backend.get(), kv->get());
  const WeightStats w = CountWeights(**model);
  // Prefill work: 2 flops per weight per token (the output matrix for the last token only) plus
  // causal attention (QK^T and PV over P^2 / 2 pairs per head).
  const int64_t output_params = static_cast<int64_t>(c.vocab_size) * c.dim;
  const double prefill_flops = 2.0 * static_cast<double>(w.step_params - output_params) * a.prompt +
                               2.0 * output_params +
                               2.0 * 2.0 * c.n_layers * c.q_dim() * a.prompt * a.prompt / 2.0;
  // KV cache read by attention per decode step, averaged over the steps.
  const double kv_bytes_per_step = 2.0 * c.n_layers * c.kv_dim() * backend->KvBytesPerValue() *
                                   a.batch * (std::max(a.prompt, a.context) + (a.decode - 1) / 2.0);
  double best_prefill = 0, best_decode = 0;
  if (!TimeRuns(tf, c, a, per_seq, &best_prefill, &best_decode)) return Fail("forward failed");
  const CudaGraphStats graphs = GetCudaGraphStats(*backend);
  std::printf(
      "{\"model\": \"%s\", \"backend\": \"%s\", \"threads\": %d, \"weight_bytes\": %lld, "
      "\"step_weight_bytes\": %lld, \"kv_bytes_per_step\": %.0f, \"int8_activations\": %s, "
      "\"context\": %d, \"prompt_tokens\": %d, "
      "\"prefill_tokens_per_s\": %.1f, \"prefill_tflops\": %.2f, \"batch\": %d, \"decode_steps\": "
      "%d, "
      "\"decode_tokens_per_s\": %.2f, \"decode_step_ms\": %.3f, "
      "\"decode_weight_gb_per_s\": %.2f, \"graphs_captured\": %lld, \"graphs_replayed\": %lld, "
      "\"dequantized_bytes\": %lld, \"decode_sampling\": \"%s\"}\n",
      flags.Get("model").c_str(), std::string(backend->name()).c_str(), a.threads,
      static_cast<long long>(w.weight_bytes), static_cast<long long>(w.step_weight_bytes),
      kv_bytes_per_step, backend_name == "cpu" && !flags.Has("exact") ? "true" : "false",
      std::max(a.prompt, a.context), a.prompt, a.prompt / best_prefill,
      prefill_flops / best_prefill / 1e12, a.batch, a.decode, a.decode * a.batch / best_decode,
      best_decode / a.decode * 1e3, w.step_weight_bytes * a.decode / best_decode / 1e9,
      static_cast<long long>(graphs.captured), static_cast<long long>(graphs.replayed),
      static_cast<long long>(graphs.dequantized_bytes),
      a.backend_sampling ? "backend" : "host logits");
  return 0;
}

}  // namespace
}  // namespace chorus

int main(int argc, char** argv) { return chorus::Run(argc, argv); }
