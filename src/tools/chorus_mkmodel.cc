// chorus-mkmodel: writes a random-weight GGUF model of any llama/qwen2/qwen3 shape and weight type,
// deterministic from --seed, with the vocabulary copied from --vocab-from (or synthesized).
//
//   chorus-mkmodel --out FILE [--arch llama|qwen2|qwen3] [--dim D] [--layers L] [--heads H]
//                  [--kv-heads K] [--head-dim HD] [--ffn F] [--vocab-size V | --vocab-from FILE]
//                  [--type f32|f16|bf16|q8_0|q4_0|q4_1|q5_0|q5_1|q2_k|q3_k|q4_k|q5_k|q6_k|
//                         q4_k_m|q5_k_m] [--context N] [--rope-base B] [--tied]
//                  [--rope-freqs] [--rope-linear FACTOR] [--seed S]
#include <cstdio>

#include "chorus/gguf/gguf.h"
#include "chorus/gguf/random_model.h"
#include "flags.h"

namespace chorus {
namespace {

int Fail(const std::string& msg) {
  std::fprintf(stderr, "chorus-mkmodel: %s\n", msg.c_str());
  return 1;
}

int Run(int argc, char** argv) {
  tools::Flags flags(
      {"out", "arch", "dim", "layers", "heads", "kv-heads", "ffn", "vocab-size", "vocab-from",
       "type", "context", "rope-base", "seed", "head-dim", "rope-linear"},
      {"tied", "rope-freqs", "help"});
  std::string error;
  if (!flags.Parse(argc, argv, &error)) return Fail(error);
  if (flags.Has("help")) {
    std::puts(
        "usage: chorus-mkmodel --out FILE [--arch llama|qwen2|qwen3] [--dim D] [--layers L]\n"
        "  [--heads H] [--kv-heads K] [--head-dim HD] [--ffn F]\n"
        "  [--vocab-size V | --vocab-from FILE]\n"
        "  [--type f32|f16|bf16|q8_0|q4_0|q4_1|q5_0|q5_1|q2_k|q3_k|q4_k|q5_k|q6_k|\n"
        "          q4_k_m|q5_k_m]   (our own round-to-nearest quantizers with a scale\n"
        "                           search; _m: Q6_K for embeddings, output and some\n"
        "                           attn_v/ffn_down, as llama.cpp's mixes)\n"
        "  [--context N] [--rope-base B] [--tied] [--seed S]\n"
        "  [--rope-freqs]          add a Llama 3.1-style rope_freqs.weight (factor 32)\n"
        "  [--rope-linear FACTOR]  linear rope scaling metadata");
    return 0;
  }
  if (!flags.Has("out")) return Fail("--out is required");
  RandomModelSpec s;
  s.arch = flags.Get("arch", "llama");
  int64_t seed;
  if (!flags.GetNumber("dim", 64, 2, 1 << 16, &s.dim, &error) ||
      !flags.GetNumber("layers", 2, 1, 1024, &s.n_layers, &error) ||
      !flags.GetNumber("heads", 4, 1, 1024, &s.n_heads, &error) ||
      !flags.GetNumber("kv-heads", s.n_heads, 1, 1024, &s.n_kv_heads, &error) ||
      !flags.GetNumber("ffn", 128, 1, 1 << 20, &s.ffn_dim, &error) ||
      !flags.GetNumber("vocab-size", 512, 259, 1 << 24, &s.vocab_size, &error) ||
      !flags.GetNumber("context", 2048, 1, 1 << 24, &s.context_length, &error) ||
      !flags.GetNumber("rope-base", 10000.0f, 1.0001f, 1e9f, &s.rope_base, &error) ||
      !flags.GetNumber("head-dim", 0, 0, 1024, &s.head_dim, &error) ||
      !flags.GetNumber("rope-linear", 0.0f, 0.0f, 1024.0f, &s.rope_linear_factor, &error) ||
      !flags.GetNumber<int64_t>("seed", 1, 0, INT64_MAX, &seed, &error)) {
    return Fail(error);
  }
  if (!flags.Has("kv-heads")) s.n_kv_heads = s.n_heads;
  s.seed = static_cast<uint64_t>(seed);
  s.tied_output = flags.Has("tied");
  s.rope_freqs = flags.Has("rope-freqs");
  std::string type_name = flags.Get("type", "f32");
  if (type_name.size() > 2 && (type_name.ends_with("_m") || type_name.ends_with("_M"))) {
    s.k_mix = true;  // q4_k_m, q5_k_m: the K-quant mix (random_model.h)
    type_name.resize(type_name.size() - 2);
  }
  auto type = ParseTypeName(type_name);
  if (!type || (s.k_mix && *type != GgmlType::kQ4_K && *type != GgmlType::kQ5_K)) {
    return Fail(
        "--type must be one of f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, q2_k, q3_k, "
        "q4_k, q5_k, q6_k, q4_k_m, q5_k_m");
  }
  s.weight_type = *type;

  std::unique_ptr<GgufFile> vocab;
  if (flags.Has("vocab-from")) {
    auto v = GgufFile::Open(flags.Get("vocab-from"));
    if (!v.ok()) return Fail(std::string(v.status().message()));
    vocab = std::move(*v);
  }
  GgufWriter writer;
  if (auto st = BuildRandomModel(s, vocab.get(), &writer); !st.ok()) {
    return Fail(std::string(st.message()));
  }
  if (auto st = writer.WriteFile(flags.Get("out")); !st.ok())
    return Fail(std::string(st.message()));
  return 0;
}

}  // namespace
}  // namespace chorus

int main(int argc, char** argv) { return chorus::Run(argc, argv); }
