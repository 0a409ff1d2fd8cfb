// A plain float64 forward pass written from the architectures' definitions, reading the weights
// through the scalar dequantizer and the hyperparameters straight from the file's metadata: the
// oracle for the CPU and CUDA backends. llama (adjacent-pair RoPE), qwen2 (q/k/v biases, NeoX
// RoPE), qwen3 (per-head q/k RMSNorm before NeoX RoPE, no biases); Llama 3.x rope_freqs.weight
// divisors and linear rope scaling. O(T^2) attention: fine for a few thousand positions of a
// small model.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "chorus/gguf/ggml_types.h"
#include "chorus/gguf/gguf.h"

namespace chorus::testing {

using Mat = std::vector<double>;  // row-major

// Dequantized weight [rows, cols] in double.
inline Mat Weight(const GgufFile& f, const std::string& name, int64_t* rows = nullptr) {
  const GgufTensorInfo* t = f.FindTensor(name);
  EXPECT_NE(t, nullptr) << name;
  if (t == nullptr) return {};
  std::vector<float> tmp(t->num_elements);
  DequantizeRow(t->type, t->data, tmp.data(), t->num_elements);
  if (rows) *rows = t->num_elements / t->ne[0];
  return Mat(tmp.begin(), tmp.end());
}

// y[r] = sum_c W[r, c] x[c]
inline std::vector<double> MatVec(const Mat& w, const std::vector<double>& x) {
  const size_t cols = x.size(), rows = w.size() / cols;
  std::vector<double> y(rows, 0.0);
  for (size_t r = 0; r < rows; ++r) {
    double acc = 0;
    const double* wr = w.data() + r * cols;
    for (size_t c = 0; c < cols; ++c) acc += wr[c] * x[c];
    y[r] = acc;
  }
  return y;
}

// RMSNorm of x[off, off + n) in place.
inline void RmsNormSpan(std::vector<double>& x, size_t off, size_t n, const Mat& w, double eps) {
  double ss = 0;
  for (size_t i = 0; i < n; ++i) ss += x[off + i] * x[off + i];
  const double s = 1.0 / std::sqrt(ss / n + eps);
  for (size_t i = 0; i < n; ++i) x[off + i] = x[off + i] * s * w[i];
}

inline std::vector<double> RmsNorm(std::vector<double> x, const Mat& w, double eps) {
  RmsNormSpan(x, 0, x.size(), w, eps);
  return x;
}

// Rotary embedding as the file describes it: pair i at position pos turns by
// pos / linear_factor * base^(-2i / rope_dim) / rope_freqs[i].
struct RefRope {
  int rope_dim = 0;
  double base = 10000;
  double linear_factor = 1;
  std::vector<double> freqs;  // rope_freqs.weight, empty when absent
  bool halves = false;
};

inline void Rope(std::vector<double>& v, int heads, int hd, const RefRope& r, int pos) {
  for (int i = 0; i < r.rope_dim / 2; ++i) {
    double theta = pos / r.linear_factor * std::pow(r.base, -2.0 * i / r.rope_dim);
    if (!r.freqs.empty()) theta /= r.freqs[i];
    const double c = std::cos(theta), s = std::sin(theta);
    for (int h = 0; h < heads; ++h) {
      const int a = r.halves ? i : 2 * i, b = r.halves ? i + r.rope_dim / 2 : 2 * i + 1;
      const double x0 = v[h * hd + a], x1 = v[h * hd + b];
      v[h * hd + a] = x0 * c - x1 * s;
      v[h * hd + b] = x0 * s + x1 * c;
    }
  }
}

inline double MetaFloat(const GgufFile& f, const std::string& key, double fallback) {
  auto v = f.GetFloat(key);
  return v.ok() ? *v : fallback;
}
inline int MetaInt(const GgufFile& f, const std::string& key, int fallback) {
  auto v = f.GetUint(key, 1u << 30);
  return v.ok() ? static_cast<int>(*v) : fallback;
}

// The shape of the model as the reference reads it from the file.
struct RefShape {
  std::string arch;
  int dim, n_layers, n_heads, n_kv_heads, hd;
  double eps;
  RefRope rope;
};

inline RefShape ReadRefShape(const GgufFile& f, bool ignore_rope_freqs = false) {
  RefShape s;
  s.arch = std::string(*f.GetString("general.architecture"));
  const std::string p = s.arch + ".";
  s.dim = MetaInt(f, p + "embedding_length", 0);
  s.n_layers = MetaInt(f, p + "block_count", 0);
  s.n_heads = MetaInt(f, p + "attention.head_count", 1);
  s.n_kv_heads = MetaInt(f, p + "attention.head_count_kv", s.n_heads);
  s.hd = MetaInt(f, p + "attention.key_length", s.dim / s.n_heads);
  s.eps = MetaFloat(f, p + "attention.layer_norm_rms_epsilon", 1e-5);
  s.rope.rope_dim = MetaInt(f, p + "rope.dimension_count", s.hd);
  s.rope.base = MetaFloat(f, p + "rope.freq_base", 10000);
  s.rope.halves = s.arch != "llama";
  auto type = f.GetString(p + "rope.scaling.type");
  if (type.ok() && *type == "linear") s.rope.linear_factor = *f.GetFloat(p + "rope.scaling.factor");
  if (!ignore_rope_freqs && f.FindTensor("rope_freqs.weight") != nullptr) {
    s.rope.freqs = Weight(f, "rope_freqs.weight");
  }
  return s;
}

// Logits at every position of one sequence (rows 0..T-1; rows before first_logit are left
// empty), by the textbook definition.
inline std::vector<std::vector<double>> Reference(const GgufFile& f,
                                                  const std::vector<int32_t>& tokens,
                                                  bool ignore_rope_freqs = false,
                                                  int first_logit = 0) {
  const RefShape S = ReadRefShape(f, ignore_rope_freqs);
  const int T = static_cast<int>(tokens.size()), hd = S.hd;
  const Mat embd = Weight(f, "token_embd.weight");
  std::vector<std::vector<double>> x(T);
  for (int t = 0; t < T; ++t) {
    x[t].assign(embd.begin() + tokens[t] * S.dim, embd.begin() + (tokens[t] + 1) * S.dim);
  }
  for (int l = 0; l < S.n_layers; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    const Mat an = Weight(f, p + "attn_norm.weight"), wq = Weight(f, p + "attn_q.weight"),
              wk = Weight(f, p + "attn_k.weight"), wv = Weight(f, p + "attn_v.weight"),
              wo = Weight(f, p + "attn_output.weight"), fn = Weight(f, p + "ffn_norm.weight"),
              wg = Weight(f, p + "ffn_gate.weight"), wu = Weight(f, p + "ffn_up.weight"),
              wd = Weight(f, p + "ffn_down.weight");
    Mat bq, bk, bv, qn, kn;
    if (S.arch == "qwen2") {
      bq = Weight(f, p + "attn_q.bias"), bk = Weight(f, p + "attn_k.bias");
      bv = Weight(f, p + "attn_v.bias");
    }
    if (S.arch == "qwen3") {
      qn = Weight(f, p + "attn_q_norm.weight");
      kn = Weight(f, p + "attn_k_norm.weight");
    }
    std::vector<std::vector<double>> q(T), k(T), v(T);
    for (int t = 0; t < T; ++t) {
      const auto xn = RmsNorm(x[t], an, S.eps);
      q[t] = MatVec(wq, xn);
      k[t] = MatVec(wk, xn);
      v[t] = MatVec(wv, xn);
      for (size_t i = 0; i < bq.size(); ++i) q[t][i] += bq[i];
      for (size_t i = 0; i < bk.size(); ++i) k[t][i] += bk[i], v[t][i] += bv[i];
      if (!qn.empty()) {
        for (int h = 0; h < S.n_heads; ++h) RmsNormSpan(q[t], h * hd, hd, qn, S.eps);
        for (int h = 0; h < S.n_kv_heads; ++h) RmsNormSpan(k[t], h * hd, hd, kn, S.eps);
      }
      Rope(q[t], S.n_heads, hd, S.rope, t);
      Rope(k[t], S.n_kv_heads, hd, S.rope, t);
    }
    std::vector<double> s(T);
    for (int t = 0; t < T; ++t) {
      std::vector<double> att(static_cast<size_t>(S.n_heads) * hd, 0.0);
      for (int h = 0; h < S.n_heads; ++h) {
        const int kh = h / (S.n_heads / S.n_kv_heads);
        for (int u = 0; u <= t; ++u) {
          double d = 0;
          for (int i = 0; i < hd; ++i) d += q[t][h * hd + i] * k[u][kh * hd + i];
          s[u] = d / std::sqrt(static_cast<double>(hd));
        }
        const double mx = *std::max_element(s.begin(), s.begin() + t + 1);
        double sum = 0;
        for (int u = 0; u <= t; ++u) sum += s[u] = std::exp(s[u] - mx);
        for (int u = 0; u <= t; ++u) {
          for (int i = 0; i < hd; ++i) att[h * hd + i] += s[u] / sum * v[u][kh * hd + i];
        }
      }
      const auto o = MatVec(wo, att);
      for (int i = 0; i < S.dim; ++i) x[t][i] += o[i];
      const auto xn = RmsNorm(x[t], fn, S.eps);
      auto g = MatVec(wg, xn);
      const auto u = MatVec(wu, xn);
      for (size_t i = 0; i < g.size(); ++i) g[i] = g[i] / (1 + std::exp(-g[i])) * u[i];
      const auto d = MatVec(wd, g);
      for (int i = 0; i < S.dim; ++i) x[t][i] += d[i];
    }
  }
  const Mat on = Weight(f, "output_norm.weight");
  const Mat out = f.FindTensor("output.weight") ? Weight(f, "output.weight") : embd;
  std::vector<std::vector<double>> logits(T);
  for (int t = first_logit; t < T; ++t) logits[t] = MatVec(out, RmsNorm(x[t], on, S.eps));
  return logits;
}

// Largest absolute difference relative to the largest reference value.
inline double RelError(const float* got, const std::vector<double>& want) {
  double err = 0, scale = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    err = std::max(err, std::fabs(got[i] - want[i]));
    scale = std::max(scale, std::fabs(want[i]));
  }
  return err / scale;
}

}  // namespace chorus::testing
