// Test helpers: a random GGUF model written out as a Hugging Face directory, from the
// definitions of the two layouts (not from src/hf/): HF tensor names, [out, in] row-major
// weights, and for llama q_proj/k_proj in HF's rotate-half order (GGUF row 2i of a head is HF
// row i, GGUF row 2i + 1 is HF row i + head_dim / 2).
#pragma once

#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>

#include "chorus/gguf/gguf.h"
#include "chorus/gguf/gguf_writer.h"
#include "chorus/gguf/random_model.h"
#include "chorus/hf/safetensors.h"
#include "chorus/tokenizer/tokenizer.h"

namespace chorus::testing {

using Json = nlohmann::json;

inline void WriteText(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}

// GGUF tensor name -> HF name ("" for tensors HF does not store, such as rope_freqs).
inline std::string HfName(const std::string& gguf) {
  static const std::map<std::string, std::string> kTop = {
      {"token_embd.weight", "model.embed_tokens.weight"},
      {"output_norm.weight", "model.norm.weight"},
      {"output.weight", "lm_head.weight"}};
  static const std::map<std::string, std::string> kLayer = {
      {"attn_norm.weight", "input_layernorm.weight"},
      {"ffn_norm.weight", "post_attention_layernorm.weight"},
      {"attn_q.weight", "self_attn.q_proj.weight"},
      {"attn_k.weight", "self_attn.k_proj.weight"},
      {"attn_v.weight", "self_attn.v_proj.weight"},
      {"attn_output.weight", "self_attn.o_proj.weight"},
      {"attn_q.bias", "self_attn.q_proj.bias"},
      {"attn_k.bias", "self_attn.k_proj.bias"},
      {"attn_v.bias", "self_attn.v_proj.bias"},
      {"attn_q_norm.weight", "self_attn.q_norm.weight"},
      {"attn_k_norm.weight", "self_attn.k_norm.weight"},
      {"ffn_gate.weight", "mlp.gate_proj.weight"},
      {"ffn_up.weight", "mlp.up_proj.weight"},
      {"ffn_down.weight", "mlp.down_proj.weight"}};
  if (kTop.count(gguf)) return kTop.at(gguf);
  if (gguf.rfind("blk.", 0) != 0) return "";
  const size_t dot = gguf.find('.', 4);
  const std::string layer = gguf.substr(4, dot - 4), rest = gguf.substr(dot + 1);
  return kLayer.count(rest) ? "model.layers." + layer + "." + kLayer.at(rest) : "";
}

struct HfTensor {
  std::string gguf_name;
  GgmlType type;
  std::vector<int64_t> shape;  // HF order
  std::string bytes;           // HF layout
};

// The model's tensors in HF layout (q/k rows of llama back in rotate-half order).
inline std::map<std::string, HfTensor> HfTensors(const GgufFile& g) {
  const std::string arch(*g.GetString("general.architecture"));
  const int heads = static_cast<int>(*g.GetUint(arch + ".attention.head_count", 1024));
  const int kv_heads = static_cast<int>(*g.GetUint(arch + ".attention.head_count_kv", 1024));
  std::map<std::string, HfTensor> out;
  for (const GgufTensorInfo& t : g.tensors()) {
    const std::string name = HfName(t.name);
    if (name.empty()) continue;
    HfTensor h{t.name, t.type, {}, std::string(reinterpret_cast<const char*>(t.data), t.num_bytes)};
    h.shape =
        t.n_dims == 2 ? std::vector<int64_t>{t.ne[1], t.ne[0]} : std::vector<int64_t>{t.ne[0]};
    const bool q = t.name.ends_with("attn_q.weight"), k = t.name.ends_with("attn_k.weight");
    if (arch == "llama" && (q || k)) {
      const int64_t rows = t.ne[1], row_bytes = t.num_bytes / rows;
      const int64_t hd = rows / (q ? heads : kv_heads);
      for (int64_t r = 0; r < rows; ++r) {  // GGUF row r -> HF row
        const int64_t head = r / hd, j = r % hd;
        const int64_t hf_row = head * hd + (j % 2) * (hd / 2) + j / 2;
        std::memcpy(h.bytes.data() + hf_row * row_bytes,
                    reinterpret_cast<const char*>(t.data) + r * row_bytes, row_bytes);
      }
    }
    out[name] = std::move(h);
  }
  return out;
}

inline SafetensorsDtype DtypeOf(GgmlType t) {
  return t == GgmlType::kF16    ? SafetensorsDtype::kF16
         : t == GgmlType::kBF16 ? SafetensorsDtype::kBF16
                                : SafetensorsDtype::kF32;
}

// config.json for the GGUF model's hyperparameters.
inline Json HfConfigJson(const GgufFile& g, const RandomModelSpec& spec) {
  const std::string a = spec.arch;
  const std::map<std::string, std::string> kArch = {
      {"llama", "LlamaForCausalLM"}, {"qwen2", "Qwen2ForCausalLM"}, {"qwen3", "Qwen3ForCausalLM"}};
  Json c = {{"architectures", {kArch.at(a)}},
            {"model_type", a},
            {"hidden_act", "silu"},
            {"hidden_size", spec.dim},
            {"num_hidden_layers", spec.n_layers},
            {"num_attention_heads", spec.n_heads},
            {"num_key_value_heads", spec.n_kv_heads},
            {"intermediate_size", spec.ffn_dim},
            {"max_position_embeddings", spec.context_length},
            {"vocab_size", g.FindTensor("token_embd.weight")->ne[1]},
            {"rms_norm_eps", *g.GetFloat(a + ".attention.layer_norm_rms_epsilon")},
            {"rope_theta", spec.rope_base},
            {"tie_word_embeddings", spec.tied_output},
            {"torch_dtype", "bfloat16"},
            {"use_cache", true},
            {"bos_token_id", 1},
            {"eos_token_id", 2}};
  if (spec.head_dim > 0) c["head_dim"] = spec.head_dim;
  if (a != "llama") c["use_sliding_window"] = false, c["sliding_window"] = 4096;
  if (spec.rope_freqs) {
    c["rope_scaling"] = {{"rope_type", "llama3"},
                         {"factor", 32.0},
                         {"low_freq_factor", 1.0},
                         {"high_freq_factor", 4.0},
                         {"original_max_position_embeddings", 8192}};
  }
  if (spec.rope_linear_factor > 0) {
    c["rope_scaling"] = {{"type", "linear"}, {"factor", spec.rope_linear_factor}};
  }
  return c;
}

// A small byte-level tokenizer.json: the 256 byte symbols, a few merges in both spellings,
// <|bos|> / <|eos|> (special) and <think> (not special).
inline void WriteTinyTokenizer(const std::string& dir) {
  Json vocab = Json::object();
  for (int b = 0; b < 256; ++b) vocab[ByteToUnicode(static_cast<uint8_t>(b))] = b;
  vocab["he"] = 256, vocab["ll"] = 257, vocab["hell"] = 258, vocab["hello"] = 259;
  const Json merges = {"h e", {"l", "l"}, "he ll", {"hell", "o"}};
  const std::string regex = R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|)"
                            R"( ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
  auto added = [](int id, const char* text, bool special) {
    return Json{{"id", id},        {"content", text},     {"single_word", false}, {"lstrip", false},
                {"rstrip", false}, {"normalized", false}, {"special", special}};
  };
  const Json tok = {
      {"version", "1.0"},
      {"added_tokens",
       {added(260, "<|bos|>", true), added(261, "<|eos|>", true), added(262, "<think>", false)}},
      {"normalizer", nullptr},
      {"pre_tokenizer",
       {{"type", "Sequence"},
        {"pretokenizers",
         {{{"type", "Split"},
           {"pattern", {{"Regex", regex}}},
           {"behavior", "Isolated"},
           {"invert", false}},
          {{"type", "ByteLevel"},
           {"add_prefix_space", false},
           {"trim_offsets", false},
           {"use_regex", false}}}}}},
      {"post_processor", {{"type", "ByteLevel"}}},
      {"decoder", {{"type", "ByteLevel"}}},
      {"model",
       {{"type", "BPE"},
        {"dropout", nullptr},
        {"unk_token", nullptr},
        {"byte_fallback", false},
        {"ignore_merges", false},
        {"vocab", vocab},
        {"merges", merges}}}};
  WriteText(dir + "/tokenizer.json", tok.dump());
  const Json cfg = {{"bos_token", "<|bos|>"},
                    {"eos_token", "<|eos|>"},
                    {"chat_template", "{{'<|im_start|>' + m.role}}"}};
  WriteText(dir + "/tokenizer_config.json", cfg.dump());
  WriteText(dir + "/generation_config.json", Json{{"eos_token_id", {261, 262}}}.dump());
}

// Writes the GGUF model as an HF directory: config.json (with `config_patch` merged in),
// model.safetensors (or `shards` shards and the index), and the tiny tokenizer unless
// tokenizer_from names a directory whose tokenizer files are copied.
inline void WriteHfModel(const GgufFile& g, const RandomModelSpec& spec, const std::string& dir,
                         int shards = 1, const std::string& tokenizer_from = "",
                         const Json& config_patch = Json::object()) {
  std::filesystem::create_directories(dir);
  Json config = HfConfigJson(g, spec);
  config.update(config_patch);
  WriteText(dir + "/config.json", config.dump(2));
  const auto tensors = HfTensors(g);
  std::vector<SafetensorsWriter> writers(shards);
  Json weight_map = Json::object();
  int i = 0;
  for (const auto& [name, t] : tensors) {
    const int s = i++ % shards;
    writers[s].Add(name, DtypeOf(t.type), t.shape, t.bytes);
    weight_map[name] =
        "model-0000" + std::to_string(s + 1) + "-of-0000" + std::to_string(shards) + ".safetensors";
  }
  if (shards == 1) {
    ASSERT_TRUE(writers[0].WriteFile(dir + "/model.safetensors").ok());
  } else {
    for (int s = 0; s < shards; ++s) {
      const std::string f = "model-0000" + std::to_string(s + 1) + "-of-0000" +
                            std::to_string(shards) + ".safetensors";
      ASSERT_TRUE(writers[s].WriteFile(dir + "/" + f).ok());
    }
    WriteText(dir + "/model.safetensors.index.json",
              Json{{"metadata", {{"total_size", 0}}}, {"weight_map", weight_map}}.dump());
  }
  if (tokenizer_from.empty()) {
    WriteTinyTokenizer(dir);
  } else {
    for (const char* f : {"tokenizer.json", "tokenizer_config.json"}) {
      std::filesystem::copy_file(tokenizer_from + "/" + f, dir + "/" + f,
                                 std::filesystem::copy_options::overwrite_existing);
    }
  }
}

// The HF tensors (unpermuted) as a GGUF for the float64 reference with HF's math: rotate-half
// RoPE. llama becomes "qwen2" with zero q/k/v biases, which is the same computation. With
// hf_rope false, llama stays llama: the HF rows read with GGUF's adjacent-pair RoPE, i.e. what a
// loader that forgot the permutation would compute.
inline std::unique_ptr<GgufFile> HfMathGguf(const GgufFile& g, bool hf_rope = true) {
  const std::string arch(*g.GetString("general.architecture"));
  const std::string as = arch == "llama" && hf_rope ? "qwen2" : arch;
  GgufWriter w;
  for (const GgufKeyValue& kv : g.metadata()) {
    if (kv.key == "general.architecture") {
      w.SetString(kv.key, as);
    } else if (kv.key.rfind(arch + ".", 0) == 0) {
      w.CopyValue(as + kv.key.substr(arch.size()), kv.value);
    } else {
      w.CopyValue(kv.key, kv.value);
    }
  }
  for (const auto& [name, t] : HfTensors(g)) {
    std::vector<int64_t> ne(t.shape.rbegin(), t.shape.rend());
    w.AddTensor(t.gguf_name, t.type, ne, t.bytes);
    const bool bias_for = t.gguf_name.ends_with("attn_q.weight") ||
                          t.gguf_name.ends_with("attn_k.weight") ||
                          t.gguf_name.ends_with("attn_v.weight");
    if (as != arch && bias_for) {
      const std::string b = t.gguf_name.substr(0, t.gguf_name.size() - 6) + "bias";
      w.AddTensor(b, GgmlType::kF32, {t.shape[0]}, std::string(t.shape[0] * 4, '\0'));
    }
  }
  if (const GgufTensorInfo* f = g.FindTensor("rope_freqs.weight")) {
    w.AddTensor(f->name, f->type, {f->ne[0]},
                std::string(reinterpret_cast<const char*>(f->data), f->num_bytes));
  }
  auto f = GgufFile::FromBytes(w.Serialize());
  EXPECT_TRUE(f.ok()) << f.status();
  return std::move(*f);
}

}  // namespace chorus::testing
