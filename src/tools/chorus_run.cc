// chorus-run: runs a GGUF model (or a Hugging Face directory) in-process (no server) and prints
// only the generated text on stdout; diagnostics go to stderr. With --tokenize, prints the token
// ids of stdin instead.
//
//   chorus-run --model FILE --prompt TEXT [--max-tokens N] [--temperature T] [--seed S]
//              [--top-k K] [--top-p P] [--min-p M] [--repeat-penalty R] [--threads N]
//   chorus-run --model FILE --tokenize < text      (FILE may be a Hugging Face directory)
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <iterator>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "chorus/backends/cpu_backend.h"
#include "chorus/backends/cuda_backend.h"
#include "chorus/core/utf8.h"
#include "chorus/hf/hf_model.h"
#include "chorus/model/model.h"
#include "chorus/model/transformer.h"
#include "chorus/sampling/sampler.h"
#include "flags.h"

namespace chorus {
namespace {

constexpr char kUsage[] =
    "usage: chorus-run --model FILE --prompt TEXT [--max-tokens N] [--temperature T] [--seed S]\n"
    "                  [--top-k K] [--top-p P] [--min-p M] [--repeat-penalty R] [--threads N]\n"
    "                  [--backend cpu|cuda] [--exact]\n"
    "  --exact: quantized weights dequantized to float (default: int8 activations, as llama.cpp)\n"
    "       chorus-run --model FILE --tokenize < text\n";

int Fail(const std::string& msg) {
  std::fprintf(stderr, "chorus-run: %s\n", msg.c_str());
  return 1;
}

int Tokenize(const std::string& path) {
  // A directory: its Hugging Face tokenizer files (tokenizer.json, tokenizer_config.json).
  auto file = std::filesystem::is_directory(path) ? OpenHfTokenizer(path) : GgufFile::Open(path);
  if (!file.ok()) return Fail(std::string(file.status().message()));
  auto tok = Tokenizer::FromGguf(**file);
  if (!tok.ok()) return Fail(std::string(tok.status().message()));
  const std::string text((std::istreambuf_iterator<char>(std::cin)),
                         std::istreambuf_iterator<char>());
  const auto ids = (*tok)->Encode(text, /*add_special=*/false, /*parse_special=*/false);
  std::string line;
  for (size_t i = 0; i < ids.size(); ++i) line += (i ? " " : "") + std::to_string(ids[i]);
  std::printf("%s\n", line.c_str());
  return 0;
}

struct RunOptions {
  int max_tokens = 256;
  int threads = 1;
  SamplingParams sampling;
};

bool ReadOptions(const tools::Flags& flags, RunOptions* opt, std::string* error) {
  int top_k;
  int64_t seed;
  SamplingParams& sp = opt->sampling;
  const int default_threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  if (!flags.GetNumber("max-tokens", 256, 0, 1 << 20, &opt->max_tokens, error) ||
      !flags.GetNumber("temperature", 1.0f, 0.0f, 100.0f, &sp.temperature, error) ||
      !flags.GetNumber<int64_t>("seed", 0, 0, INT64_MAX, &seed, error) ||
      !flags.GetNumber("top-k", 0, 0, 1 << 24, &top_k, error) ||
      !flags.GetNumber("top-p", 1.0f, 0.0f, 1.0f, &sp.top_p, error) ||
      !flags.GetNumber("min-p", 0.0f, 0.0f, 1.0f, &sp.min_p, error) ||
      !flags.GetNumber("repeat-penalty", 1.0f, 0.01f, 100.0f, &sp.repetition_penalty, error) ||
      !flags.GetNumber("threads", default_threads, 1, 256, &opt->threads, error)) {
    return false;
  }
  sp.top_k = top_k;
  sp.seed = static_cast<uint64_t>(seed);
  return true;
}

absl::StatusOr<std::unique_ptr<Backend>> MakeBackend(const tools::Flags& flags, int threads) {
  if (flags.Get("backend", "cpu") == "cpu") {
    return CreateCpuBackend(threads, !flags.Has("exact"));
  }
  return CreateBackend(flags.Get("backend"), threads);
}

// The prompt's tokens (BOS alone for an empty prompt); false when they and max_tokens do not fit
// the context.
bool PromptTokens(const Model& model, const std::string& prompt, int max_tokens,
                  std::vector<int32_t>* tokens, std::string* error) {
  const Tokenizer& tok = model.tokenizer();
  *tokens = tok.Encode(prompt, /*add_special=*/true, /*parse_special=*/false);
  if (tokens->empty()) {
    if (tok.bos_id() < 0) {
      *error = "--prompt is empty and the model has no BOS token";
      return false;
    }
    tokens->push_back(tok.bos_id());
  }
  const int64_t total = static_cast<int64_t>(tokens->size()) + max_tokens;
  if (total > model.config().context_length) {
    *error = "the prompt's " + std::to_string(tokens->size()) + " tokens plus --max-tokens " +
             std::to_string(max_tokens) + " exceed the model's context length " +
             std::to_string(model.config().context_length);
    return false;
  }
  return true;
}

// Decodes up to opt.max_tokens after `tokens` (one sequence: the prompt in one forward pass,
// then a token a step), writing the text to stdout as it completes and the rate to stderr.
absl::Status Decode(const Model& model, Backend* backend, const RunOptions& opt, bool strip_space,
                    std::vector<int32_t> tokens) {
  const Tokenizer& tok = model.tokenizer();
  constexpr int kBlockSize = 16;
  const int64_t total = static_cast<int64_t>(tokens.size()) + opt.max_tokens;
  const int num_blocks = static_cast<int>((total + kBlockSize - 1) / kBlockSize);
  auto kv_or = KvCache::Create(backend, model.config(), num_blocks, kBlockSize);
  if (!kv_or.ok()) return kv_or.status();
  Transformer transformer(&model, backend, kv_or->get());
  ForwardBatch batch;
  batch.max_blocks_per_seq = num_blocks;
  for (int b = 0; b < num_blocks; ++b) batch.block_tables.push_back(b);  // the only sequence
  Sampler sampler(opt.sampling);
  Utf8Stream stream;
  std::vector<float> logits;
  const auto start = std::chrono::steady_clock::now();
  int generated = 0;
  size_t pos = 0;  // tokens already in the cache
  while (generated < opt.max_tokens) {
    batch.tokens.assign(tokens.begin() + static_cast<std::ptrdiff_t>(pos), tokens.end());
    batch.positions.clear();
    for (size_t p = pos; p < tokens.size(); ++p) batch.positions.push_back(static_cast<int32_t>(p));
    batch.seq_of_token.assign(batch.tokens.size(), 0);
    batch.logit_rows = {static_cast<int32_t>(batch.tokens.size()) - 1};
    if (auto s = transformer.Forward(batch, &logits); !s.ok()) return s;
    pos = tokens.size();
    const SampledToken next = sampler.Sample(logits, tokens);
    if (tok.IsEndOfGeneration(next.token)) break;
    tokens.push_back(next.token);
    ++generated;
    std::string bytes = tok.TokenToBytes(next.token);
    if (generated == 1 && strip_space && !bytes.empty() && bytes[0] == ' ') bytes.erase(0, 1);
    const std::string text = stream.Push(bytes);
    std::fwrite(text.data(), 1, text.size(), stdout);
    std::fflush(stdout);
  }
  const std::string rest = stream.Flush();
  std::fwrite(rest.data(), 1, rest.size(), stdout);
  std::fputc('\n', stdout);
  const double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::fprintf(stderr, "chorus-run: %d tokens in %.3f s (%.1f tokens/s), %d threads\n", generated,
               secs, generated / std::max(secs, 1e-9), opt.threads);
  return absl::OkStatus();
}

int Run(int argc, char** argv) {
  tools::Flags flags({"model", "prompt", "max-tokens", "temperature", "seed", "top-k", "top-p",
                      "min-p", "repeat-penalty", "threads", "backend"},
                     {"tokenize", "help", "exact", "int8-activations"});
  std::string error;
  if (!flags.Parse(argc, argv, &error)) return Fail(error + " (see --help)");
  if (flags.Has("help")) {
    std::fputs(kUsage, stdout);
    return 0;
  }
  if (!flags.Has("model")) return Fail("--model is required");
  if (flags.Has("tokenize")) return Tokenize(flags.Get("model"));
  if (!flags.Has("prompt")) {
    return Fail("--prompt is required (use --prompt \"\" to start from BOS)");
  }
  RunOptions opt;
  if (!ReadOptions(flags, &opt, &error)) return Fail(error);
  auto backend = MakeBackend(flags, opt.threads);
  if (!backend.ok()) return Fail(std::string(backend.status().message()));
  auto model_or = Model::Load(flags.Get("model"), backend->get());
  if (!model_or.ok()) return Fail(std::string(model_or.status().message()));
  const Model& model = **model_or;
  const std::string prompt = flags.Get("prompt");
  std::vector<int32_t> tokens;
  if (!PromptTokens(model, prompt, opt.max_tokens, &tokens, &error)) return Fail(error);
  const bool strip_space = prompt.empty() && model.tokenizer().add_space_prefix();
  const absl::Status s = Decode(model, backend->get(), opt, strip_space, std::move(tokens));
  if (!s.ok()) return Fail(std::string(s.message()));
  return 0;
}

}  // namespace
}  // namespace chorus

int main(int argc, char** argv) { return chorus::Run(argc, argv); }
