#include "chorus/gguf/random_model.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <thread>
#include <vector>

#include "chorus/core/status.h"
#include "chorus/core/str_cat.h"

namespace chorus {
namespace {

class SplitMix {
 public:
  explicit SplitMix(uint64_t seed) : x_(seed) {}
  uint64_t Next() {
    uint64_t z = (x_ += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  // Uniform in [-1, 1).
  float Symmetric() {
    return static_cast<float>(static_cast<double>(Next() >> 11) * 0x1.0p-52 - 1.0);
  }

 private:
  uint64_t x_;
};

void AddRandomTensor(GgufWriter* w, const std::string& name, GgmlType type, int64_t cols,
                     int64_t rows, float scale, uint64_t seed) {
  SplitMix rng(seed);
  auto traits = GetTypeTraits(static_cast<uint32_t>(type));
  const int64_t row_bytes = cols / traits->block_size * traits->type_size;
  std::string data(static_cast<size_t>(row_bytes * rows), '\0');
  // Values in sequence (one stream per tensor), then rows quantized on every core: the
  // K-quant scale search is slow single-threaded on 1B-sized models.
  constexpr int64_t kChunkRows = 256;
  std::vector<float> vals(static_cast<size_t>(std::min(rows, kChunkRows * 64) * cols));
  const int threads = std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
  for (int64_t r0 = 0; r0 < rows; r0 += kChunkRows * 64) {
    const int64_t n = std::min(rows - r0, kChunkRows * 64);
    for (int64_t i = 0; i < n * cols; ++i) vals[i] = rng.Symmetric() * scale;
    std::atomic<int64_t> next{0};
    auto work = [&] {
      for (int64_t c; (c = next.fetch_add(kChunkRows)) < n;) {
        for (int64_t r = c; r < std::min(n, c + kChunkRows); ++r) {
          QuantizeRow(type, vals.data() + r * cols, data.data() + (r0 + r) * row_bytes, cols);
        }
      }
    };
    std::vector<std::thread> pool;
    for (int t = 1; t < threads && t * kChunkRows < n; ++t) pool.emplace_back(work);
    work();
    for (auto& t : pool) t.join();
  }
  w->AddTensor(name, type,
               rows > 1 || type != GgmlType::kF32 ? std::vector<int64_t>{cols, rows}
                                                  : std::vector<int64_t>{cols},
               std::move(data));
}

void AddNorm(GgufWriter* w, const std::string& name, int64_t n, uint64_t seed) {
  SplitMix rng(seed);
  std::vector<float> v(n);
  for (auto& x : v) x = 1.0f + 0.1f * rng.Symmetric();
  w->AddTensor(name, GgmlType::kF32, {n}, std::string(reinterpret_cast<char*>(v.data()), n * 4));
}

}  // namespace

std::vector<float> Llama3RopeFreqs(int rope_dim, float base, float factor, float low_freq_factor,
                                   float high_freq_factor, float original_context) {
  const double kPi = 3.14159265358979323846;
  const double low_wavelen = original_context / low_freq_factor;
  const double high_wavelen = original_context / high_freq_factor;
  std::vector<float> out(rope_dim / 2);
  for (int i = 0; i < rope_dim / 2; ++i) {
    const double freq = std::pow(static_cast<double>(base), -2.0 * i / rope_dim);
    const double wavelen = 2 * kPi / freq;
    double f = 1.0;
    if (wavelen > low_wavelen) {
      f = factor;
    } else if (wavelen >= high_wavelen) {
      const double smooth =
          (original_context / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor);
      f = 1.0 / ((1 - smooth) / factor + smooth);
    }
    out[i] = static_cast<float>(f);
  }
  return out;
}

namespace {

// The head size the spec implies, or INVALID_ARGUMENT naming what does not fit.
absl::StatusOr<int64_t> CheckSpec(const RandomModelSpec& s) {
  if (s.arch != "llama" && s.arch != "qwen2" && s.arch != "qwen3") {
    return absl::InvalidArgumentError(StrCat("arch '", s.arch, "' is not llama, qwen2 or qwen3"));
  }
  const int64_t hd = s.head_dim > 0 ? s.head_dim : (s.n_heads > 0 ? s.dim / s.n_heads : 0);
  if (s.dim <= 0 || s.n_heads <= 0 || s.n_kv_heads <= 0 ||
      (s.head_dim == 0 && s.dim % s.n_heads != 0) || s.n_heads % s.n_kv_heads != 0 || hd % 2 != 0 ||
      hd <= 0) {
    return absl::InvalidArgumentError(StrCat("dim ", s.dim, ", heads ", s.n_heads, ", kv heads ",
                                             s.n_kv_heads, " do not form an even head size"));
  }
  auto traits = GetTypeTraits(static_cast<uint32_t>(s.weight_type));
  if (!traits || !traits->supported) return absl::InvalidArgumentError("unsupported weight type");
  if (s.dim % traits->block_size != 0 || s.ffn_dim % traits->block_size != 0) {
    return absl::InvalidArgumentError(
        StrCat("dim and ffn must be multiples of ", traits->block_size, " for ", traits->name));
  }
  return hd;
}

void WriteHparams(const RandomModelSpec& s, int64_t hd, GgufWriter* w) {
  const std::string a = s.arch;
  w->SetString("general.architecture", a);
  w->SetString("general.name", StrCat("chorus-random-", a, "-", s.dim, "x", s.n_layers));
  w->SetU32(a + ".context_length", s.context_length);
  w->SetU32(a + ".embedding_length", s.dim);
  w->SetU32(a + ".block_count", s.n_layers);
  w->SetU32(a + ".feed_forward_length", s.ffn_dim);
  w->SetU32(a + ".attention.head_count", s.n_heads);
  w->SetU32(a + ".attention.head_count_kv", s.n_kv_heads);
  w->SetU32(a + ".rope.dimension_count", static_cast<uint32_t>(hd));
  w->SetF32(a + ".rope.freq_base", s.rope_base);
  if (s.head_dim > 0) {
    w->SetU32(a + ".attention.key_length", static_cast<uint32_t>(hd));
    w->SetU32(a + ".attention.value_length", static_cast<uint32_t>(hd));
  }
  if (s.rope_linear_factor > 0) {
    w->SetString(a + ".rope.scaling.type", "linear");
    w->SetF32(a + ".rope.scaling.factor", s.rope_linear_factor);
  }
  w->SetF32(a + ".attention.layer_norm_rms_epsilon", 1e-5f);
}

// The vocabulary (copied from `vocab_from`, or a synthesized byte-level one); its size.
absl::StatusOr<int64_t> WriteVocab(const RandomModelSpec& s, const GgufFile* vocab_from,
                                   GgufWriter* w) {
  int64_t vocab = s.vocab_size;
  if (vocab_from != nullptr) {
    const GgufValue* tokens = vocab_from->Find("tokenizer.ggml.tokens");
    if (tokens == nullptr || tokens->type != GgufType::kArray) {
      return absl::InvalidArgumentError("the vocabulary file has no tokenizer.ggml.tokens array");
    }
    for (const auto& kv : vocab_from->metadata()) {
      if (kv.key.rfind("tokenizer.", 0) == 0) w->CopyValue(kv.key, kv.value);
    }
    return static_cast<int64_t>(tokens->count);
  }
  if (vocab < 259)
    return absl::InvalidArgumentError("a synthesized vocabulary needs >= 259 tokens");
  std::vector<std::string> toks = {"<unk>", "<s>", "</s>"};
  std::vector<float> scores(vocab, 0.0f);
  std::vector<int32_t> types = {2, 3, 3};
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    toks.push_back(name);
    types.push_back(6);
  }
  while (static_cast<int64_t>(toks.size()) < vocab) {
    toks.push_back(StrCat("<extra_", toks.size(), ">"));
    types.push_back(5);
  }
  w->SetString("tokenizer.ggml.model", "llama");
  w->SetStringArray("tokenizer.ggml.tokens", toks);
  w->SetF32Array("tokenizer.ggml.scores", scores);
  w->SetI32Array("tokenizer.ggml.token_type", types);
  w->SetU32("tokenizer.ggml.bos_token_id", 1);
  w->SetU32("tokenizer.ggml.eos_token_id", 2);
  w->SetU32("tokenizer.ggml.unknown_token_id", 0);
  return vocab;
}

// One layer's tensors; `seed` advances once per tensor, in file order.
void WriteLayer(const RandomModelSpec& s, int l, int64_t hd, uint64_t* seed, GgufWriter* w) {
  const int64_t dim = s.dim, ffn = s.ffn_dim;
  const int64_t q_dim = s.n_heads * hd, kv_dim = s.n_kv_heads * hd;
  const GgmlType t = s.weight_type;
  const GgmlType big = s.k_mix ? GgmlType::kQ6_K : t;  // the mix's wider tensors
  const int eighth = s.n_layers / 8;
  const bool more_bits =
      s.k_mix && (l < eighth || l >= s.n_layers - eighth || (l - eighth) % 3 == 2);
  const float in_scale = 1.0f / std::sqrt(static_cast<float>(dim));
  const std::string p = StrCat("blk.", l, ".");
  AddNorm(w, p + "attn_norm.weight", dim, ++*seed);
  AddRandomTensor(w, p + "attn_q.weight", t, dim, q_dim, in_scale, ++*seed);
  AddRandomTensor(w, p + "attn_k.weight", t, dim, kv_dim, in_scale, ++*seed);
  AddRandomTensor(w, p + "attn_v.weight", more_bits ? big : t, dim, kv_dim, in_scale, ++*seed);
  if (s.arch == "qwen2") {
    AddRandomTensor(w, p + "attn_q.bias", GgmlType::kF32, q_dim, 1, 0.1f, ++*seed);
    AddRandomTensor(w, p + "attn_k.bias", GgmlType::kF32, kv_dim, 1, 0.1f, ++*seed);
    AddRandomTensor(w, p + "attn_v.bias", GgmlType::kF32, kv_dim, 1, 0.1f, ++*seed);
  }
  if (s.arch == "qwen3") {
    AddNorm(w, p + "attn_q_norm.weight", hd, ++*seed);
    AddNorm(w, p + "attn_k_norm.weight", hd, ++*seed);
  }
  AddRandomTensor(w, p + "attn_output.weight", t, q_dim, dim, 1.0f / std::sqrt(float(q_dim)),
                  ++*seed);
  AddNorm(w, p + "ffn_norm.weight", dim, ++*seed);
  AddRandomTensor(w, p + "ffn_gate.weight", t, dim, ffn, in_scale, ++*seed);
  AddRandomTensor(w, p + "ffn_up.weight", t, dim, ffn, in_scale, ++*seed);
  AddRandomTensor(w, p + "ffn_down.weight", more_bits ? big : t, ffn, dim,
                  1.0f / std::sqrt(float(ffn)), ++*seed);
}

}  // namespace

absl::Status BuildRandomModel(const RandomModelSpec& s, const GgufFile* vocab_from, GgufWriter* w) {
  CHORUS_ASSIGN_OR_RETURN(const int64_t hd, CheckSpec(s));
  WriteHparams(s, hd, w);
  CHORUS_ASSIGN_OR_RETURN(const int64_t vocab, WriteVocab(s, vocab_from, w));
  const int64_t dim = s.dim;
  const GgmlType big = s.k_mix ? GgmlType::kQ6_K : s.weight_type;
  uint64_t seed = s.seed * 1000003;
  const float in_scale = 1.0f / std::sqrt(static_cast<float>(dim));
  AddRandomTensor(w, "token_embd.weight", big, dim, vocab, 1.0f, ++seed);
  AddNorm(w, "output_norm.weight", dim, ++seed);
  if (!s.tied_output) AddRandomTensor(w, "output.weight", big, dim, vocab, in_scale, ++seed);
  if (s.rope_freqs) {
    const std::vector<float> f = Llama3RopeFreqs(static_cast<int>(hd), s.rope_base);
    w->AddTensor("rope_freqs.weight", GgmlType::kF32, {static_cast<int64_t>(f.size())},
                 std::string(reinterpret_cast<const char*>(f.data()), f.size() * 4));
  }
  for (int l = 0; l < s.n_layers; ++l) WriteLayer(s, l, hd, &seed, w);
  return absl::OkStatus();
}

}  // namespace chorus
