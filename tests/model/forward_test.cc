// The optimized CPU forward pass against a plain float64 reference written here from the
// architecture's definition (reading weights through the scalar dequantizer), for random models
// of both architectures and every weight type; plus batching and load-error behaviour.
#include <gtest/gtest.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <numeric>
#include <random>

#include "chorus/backends/cpu_backend.h"
#include "chorus/gguf/gguf_writer.h"
#include "chorus/gguf/random_model.h"
#include "chorus/model/model.h"
#include "chorus/model/transformer.h"
#include "random_model_file.h"
#include "reference_forward.h"
#include "src/backends/cpu/cpu_gemm_f32.h"
#include "src/backends/cpu/cpu_int8_packed.h"

namespace chorus {
namespace {

using testing::MakeModelFile;
using testing::Reference;
using testing::RelError;

struct Param {
  std::string arch;
  GgmlType type;
  int threads;
};

class ForwardTest : public ::testing::TestWithParam<Param> {};

TEST_P(ForwardTest, MatchesFloat64Reference) {
  RandomModelSpec spec;
  spec.arch = GetParam().arch;
  spec.weight_type = GetParam().type;
  spec.dim = 64;
  spec.n_heads = 4;
  spec.n_kv_heads = 2;
  spec.ffn_dim = 96;
  if (GetTypeTraits(static_cast<uint32_t>(spec.weight_type))->block_size == 256) {
    spec.dim = spec.ffn_dim = 256;  // K-quant super-blocks
  }
  spec.n_layers = 2;
  spec.vocab_size = 300;
  spec.tied_output = spec.arch != "llama";
  spec.seed = 42;
  auto backend = CreateCpuBackend(GetParam().threads);
  auto model = Model::FromFile(MakeModelFile(spec), backend.get());
  ASSERT_TRUE(model.ok()) << model.status();
  const ModelConfig& c = (*model)->config();

  std::mt19937 rng(3);
  std::vector<int32_t> tokens(13);
  for (auto& t : tokens) t = static_cast<int32_t>(rng() % c.vocab_size);
  const auto want = Reference((*model)->file(), tokens);

  // Blocks of 4 tokens handed out in a scrambled order: the paging must not matter.
  auto kv = KvCache::Create(backend.get(), c, 8, 4);
  ASSERT_TRUE(kv.ok());
  Transformer tf(model->get(), backend.get(), kv->get());
  ForwardBatch b;
  b.max_blocks_per_seq = 4;
  b.block_tables = {6, 1, 4, 3};
  // Prefill the first 9 tokens in one call, then decode the rest one by one.
  for (int t = 0; t < 9; ++t) {
    b.tokens.push_back(tokens[t]);
    b.positions.push_back(t);
    b.seq_of_token.push_back(0);
    b.logit_rows.push_back(t);
  }
  std::vector<float> logits;
  ASSERT_TRUE(tf.Forward(b, &logits).ok());
  const double tol = 1e-5;
  for (int t = 0; t < 9; ++t) {
    EXPECT_LT(RelError(logits.data() + t * c.vocab_size, want[t]), tol) << "position " << t;
  }
  for (int t = 9; t < 13; ++t) {
    b.tokens = {tokens[t]};
    b.positions = {t};
    b.seq_of_token = {0};
    b.logit_rows = {0};
    ASSERT_TRUE(tf.Forward(b, &logits).ok());
    EXPECT_LT(RelError(logits.data(), want[t]), tol) << "position " << t;
  }
}

INSTANTIATE_TEST_SUITE_P(
    AllTypes, ForwardTest,
    ::testing::Values(Param{"llama", GgmlType::kF32, 1}, Param{"llama", GgmlType::kF32, 3},
                      Param{"llama", GgmlType::kF16, 2}, Param{"llama", GgmlType::kBF16, 2},
                      Param{"llama", GgmlType::kQ8_0, 2}, Param{"llama", GgmlType::kQ4_0, 2},
                      Param{"qwen2", GgmlType::kF32, 2}, Param{"qwen2", GgmlType::kF16, 2},
                      Param{"qwen2", GgmlType::kBF16, 2}, Param{"qwen2", GgmlType::kQ8_0, 2},
                      Param{"qwen2", GgmlType::kQ4_0, 2}, Param{"qwen3", GgmlType::kF32, 2},
                      Param{"qwen3", GgmlType::kQ8_0, 1}, Param{"llama", GgmlType::kQ4_1, 2},
                      Param{"llama", GgmlType::kQ5_0, 2}, Param{"llama", GgmlType::kQ5_1, 2},
                      Param{"llama", GgmlType::kQ2_K, 2}, Param{"llama", GgmlType::kQ3_K, 2},
                      Param{"llama", GgmlType::kQ4_K, 2}, Param{"llama", GgmlType::kQ5_K, 2},
                      Param{"llama", GgmlType::kQ6_K, 2}, Param{"qwen3", GgmlType::kQ4_K, 2}),
    [](const auto& info) {
      return info.param.arch + "_" + std::string(TypeName(info.param.type)) + "_t" +
             std::to_string(info.param.threads);
    });

TEST(ForwardBatchTest, SequencesAtDifferentPositionsInOneCallMatchEachAlone) {
  RandomModelSpec spec;
  spec.seed = 9;
  auto backend = CreateCpuBackend(2);
  auto model = Model::FromFile(MakeModelFile(spec), backend.get());
  ASSERT_TRUE(model.ok());
  const ModelConfig& c = (*model)->config();
  const std::vector<int32_t> a = {5, 77, 300, 12, 9, 41, 42};
  const std::vector<int32_t> s = {100, 200, 150, 3, 4};
  const auto want_a = Reference((*model)->file(), a);
  const auto want_s = Reference((*model)->file(), s);

  auto kv = KvCache::Create(backend.get(), c, 16, 4);
  ASSERT_TRUE(kv.ok());
  Transformer tf(model->get(), backend.get(), kv->get());
  ForwardBatch b;
  b.max_blocks_per_seq = 2;
  b.block_tables = {0, 1, 2, 3};
  std::vector<float> logits;
  // Step 1: a's first 6 tokens alone.
  for (int t = 0; t < 6; ++t) {
    b.tokens.push_back(a[t]);
    b.positions.push_back(t);
    b.seq_of_token.push_back(0);
  }
  b.logit_rows = {5};
  ASSERT_TRUE(tf.Forward(b, &logits).ok());
  // Step 2: a decodes its 7th token while s prefills all of its tokens, in one call.
  b.tokens = {a[6]};
  b.positions = {6};
  b.seq_of_token = {0};
  for (int t = 0; t < 5; ++t) {
    b.tokens.push_back(s[t]);
    b.positions.push_back(t);
    b.seq_of_token.push_back(1);
  }
  b.logit_rows = {0, 3, 5};
  ASSERT_TRUE(tf.Forward(b, &logits).ok());
  EXPECT_LT(RelError(logits.data(), want_a[6]), 1e-5);
  EXPECT_LT(RelError(logits.data() + c.vocab_size, want_s[2]), 1e-5);
  EXPECT_LT(RelError(logits.data() + 2 * c.vocab_size, want_s[4]), 1e-5);
}

// ForwardSampled keeps the logits in the backend: its draws equal the rule applied to the logits
// Forward returns (shared rows included), its host rows are exactly those rows' logits, and a
// host row outside the batch's logit rows is an error, not a crash.
TEST(ForwardBatchTest, SampledForwardEqualsHostSamplingOfTheSameLogits) {
  RandomModelSpec spec;
  spec.seed = 4;
  auto backend = CreateCpuBackend(2);
  auto model = Model::FromFile(MakeModelFile(spec), backend.get());
  ASSERT_TRUE(model.ok());
  const ModelConfig& c = (*model)->config();
  const size_t vocab = static_cast<size_t>(c.vocab_size);
  ForwardBatch b;
  b.max_blocks_per_seq = 2;
  b.block_tables = {0, 1, 2, 3};
  for (int t = 0; t < 5; ++t) {
    for (int s = 0; s < 2; ++s) {
      b.tokens.push_back((t * 31 + s * 7) % c.vocab_size);
      b.positions.push_back(t);
      b.seq_of_token.push_back(s);
    }
  }
  b.logit_rows = {8, 9, 3};
  std::vector<RowSampling> draws;
  for (int i = 0; i < 5; ++i) {
    SamplingParams p;
    p.seed = 10 + i;
    p.temperature = i == 0 ? 0.0f : 0.9f;
    p.top_k = i == 2 ? 5 : 0;
    draws.push_back(Sampler(p).NextRow(i % 3));
  }
  auto run = [&](auto&& body) {
    auto kv = KvCache::Create(backend.get(), c, 4, 4);
    Transformer tf(model->get(), backend.get(), kv->get());
    return body(tf);
  };
  std::vector<float> all;
  ASSERT_TRUE(run([&](Transformer& tf) { return tf.Forward(b, &all); }).ok());
  std::vector<float> host;
  std::vector<SampledToken> sampled;
  ASSERT_TRUE(run([&](Transformer& tf) {
                return tf.ForwardSampled(b, draws, {2, 0}, &host, &sampled);
              }).ok());
  ASSERT_EQ(host.size(), 2 * vocab);
  EXPECT_TRUE(std::equal(host.begin(), host.begin() + vocab, all.begin() + 2 * vocab));
  EXPECT_TRUE(std::equal(host.begin() + vocab, host.end(), all.begin()));
  ASSERT_EQ(sampled.size(), draws.size());
  RowSampler rule;
  for (size_t i = 0; i < draws.size(); ++i) {
    std::span<const float> row(all.data() + draws[i].row * vocab, vocab);
    const SampledToken want = rule.Sample(row, row, draws[i]);
    EXPECT_EQ(sampled[i].token, want.token) << i;
    EXPECT_EQ(sampled[i].logprob, want.logprob) << i;
  }
  EXPECT_EQ(run([&](Transformer& tf) {
              return tf.ForwardSampled(b, draws, {3}, &host, &sampled);
            }).code(),
            absl::StatusCode::kInvalidArgument);
  draws[1].row = 3;
  EXPECT_EQ(
      run([&](Transformer& tf) { return tf.ForwardSampled(b, draws, {}, &host, &sampled); }).code(),
      absl::StatusCode::kInvalidArgument);
}

TEST(ForwardBatchTest, InconsistentBatchesAreRejectedNotCrashed) {
  RandomModelSpec spec;
  auto backend = CreateCpuBackend(1);
  auto model = Model::FromFile(MakeModelFile(spec), backend.get());
  ASSERT_TRUE(model.ok());
  auto kv = KvCache::Create(backend.get(), (*model)->config(), 4, 4);
  ASSERT_TRUE(kv.ok());
  Transformer tf(model->get(), backend.get(), kv->get());
  std::vector<float> logits;
  auto run = [&](ForwardBatch b) { return tf.Forward(b, &logits); };
  ForwardBatch ok{{1}, {0}, {0}, {0}, 1, {0}};
  EXPECT_TRUE(run(ok).ok());
  ForwardBatch bad_token = ok;
  bad_token.tokens = {512};
  EXPECT_EQ(run(bad_token).code(), absl::StatusCode::kInvalidArgument);
  ForwardBatch bad_pos = ok;
  bad_pos.positions = {4};  // one block of 4 tokens
  EXPECT_EQ(run(bad_pos).code(), absl::StatusCode::kInvalidArgument);
  ForwardBatch bad_block = ok;
  bad_block.block_tables = {9};
  EXPECT_EQ(run(bad_block).code(), absl::StatusCode::kInvalidArgument);
  ForwardBatch bad_seq = ok;
  bad_seq.seq_of_token = {1};
  EXPECT_EQ(run(bad_seq).code(), absl::StatusCode::kInvalidArgument);
  ForwardBatch bad_row = ok;
  bad_row.logit_rows = {1};
  EXPECT_EQ(run(bad_row).code(), absl::StatusCode::kInvalidArgument);
}

// A model file whose metadata disagrees with its tensors is refused with the tensor's name.
TEST(ModelLoadTest, ShapeMismatchAndMissingTensorsAreNamed) {
  RandomModelSpec spec;
  GgufWriter base;
  ASSERT_TRUE(BuildRandomModel(spec, nullptr, &base).ok());
  auto f = GgufFile::FromBytes(base.Serialize());
  ASSERT_TRUE(f.ok());
  auto rewrite = [&](const std::string& key, uint32_t value) {
    GgufWriter w;
    for (const auto& kv : (*f)->metadata()) {
      if (kv.key == key) {
        w.SetU32(key, value);
      } else {
        w.CopyValue(kv.key, kv.value);
      }
    }
    for (const auto& t : (*f)->tensors()) {
      w.AddTensor(t.name, t.type, std::vector<int64_t>(t.ne, t.ne + t.n_dims),
                  std::string(reinterpret_cast<const char*>(t.data), t.num_bytes));
    }
    return GgufFile::FromBytes(w.Serialize());
  };
  auto backend = CreateCpuBackend(1);
  auto more_layers = rewrite("llama.block_count", 3);
  ASSERT_TRUE(more_layers.ok());
  auto m1 = Model::FromFile(std::move(*more_layers), backend.get());
  ASSERT_FALSE(m1.ok());
  EXPECT_NE(m1.status().message().find("missing tensor 'blk.2.attn_norm.weight'"),
            std::string::npos)
      << m1.status();
  auto wider_ffn = rewrite("llama.feed_forward_length", 160);
  ASSERT_TRUE(wider_ffn.ok());
  auto m2 = Model::FromFile(std::move(*wider_ffn), backend.get());
  ASSERT_FALSE(m2.ok());
  EXPECT_NE(m2.status().message().find("blk.0.ffn_gate.weight' has shape [64, 128]"),
            std::string::npos)
      << m2.status();
  auto bad_heads = rewrite("llama.attention.head_count", 3);
  ASSERT_TRUE(bad_heads.ok());
  EXPECT_FALSE(Model::FromFile(std::move(*bad_heads), backend.get()).ok());
}

}  // namespace
}  // namespace chorus

namespace chorus {
namespace {

// The int8-activation path (an opt-in speed mode) stays close to the exact float path: the
// activations are rounded to 8 bits per 32-value block, nothing else changes.
TEST(Int8ActivationTest, QuantizedMatmulsStayCloseToTheExactPath) {
  for (GgmlType type :
       {GgmlType::kQ8_0, GgmlType::kQ4_0, GgmlType::kQ4_K, GgmlType::kQ5_K, GgmlType::kQ6_K}) {
    if (!cpu::Int8Supported(type)) continue;
    RandomModelSpec spec;
    spec.weight_type = type;
    spec.dim = 256;
    spec.ffn_dim = 256;
    spec.seed = 5;
    GgufWriter w;
    ASSERT_TRUE(BuildRandomModel(spec, nullptr, &w).ok());
    const std::string bytes = w.Serialize();
    auto run = [&](bool int8) {
      auto be = CreateCpuBackend(2, int8);
      auto m = Model::FromFile(std::move(*GgufFile::FromBytes(bytes)), be.get());
      auto kv = KvCache::Create(be.get(), (*m)->config(), 2, 16);
      Transformer tf(m->get(), be.get(), kv->get());
      ForwardBatch b;
      b.max_blocks_per_seq = 2;
      b.block_tables = {0, 1};
      for (int t = 0; t < 20; ++t) {
        b.tokens.push_back(t * 31 % 512);
        b.positions.push_back(t);
        b.seq_of_token.push_back(0);
        b.logit_rows.push_back(t);
      }
      std::vector<float> logits;
      EXPECT_TRUE(tf.Forward(b, &logits).ok());
      return logits;
    };
    const auto exact = run(false), fast = run(true);
    ASSERT_EQ(exact.size(), fast.size());
    double err = 0, scale = 0;
    for (size_t i = 0; i < exact.size(); ++i) {
      err = std::max(err, static_cast<double>(std::fabs(exact[i] - fast[i])));
      scale = std::max(scale, static_cast<double>(std::fabs(exact[i])));
    }
    EXPECT_LT(err / scale, 3e-2) << TypeName(type);
    EXPECT_GT(err, 0.0) << "the int8 path did not run";
  }
}

// The F32 panel kernel (prefill and batched decode over F32 weights) against dots summed in
// double, for every token tile size up to 8 and beyond, and for the second panel alone.
TEST(F32PanelTest, MatchesDoubleDots) {
  std::mt19937 rng(11);
  std::uniform_real_distribution<float> dist(-1, 1);
  const int64_t rows = 2 * cpu::kF32PanelRows, cols = 300;
  std::vector<float> wf(rows * cols);
  for (auto& v : wf) v = dist(rng);
  WeightTensor w{GgmlType::kF32, rows, cols, wf.data(), cols * 4};
  if (!cpu::F32PanelSupported(w)) GTEST_SKIP() << "no AVX-512 in this build";
  std::vector<float> panels(cpu::F32PanelBytes(w) / sizeof(float));
  cpu::PackF32Panels(w, 0, rows / cpu::kF32PanelRows, panels.data());
  for (int m : {1, 2, 3, 7, 8, 9, 17}) {
    std::vector<float> x(m * cols), out(m * rows, NAN);
    for (auto& v : x) v = dist(rng);
    constexpr int64_t kP = cpu::kF32PanelRows;
    cpu::MatMulF32Panels(w, panels.data(), x.data(), m, out.data(), rows, kP, rows);
    cpu::MatMulF32Panels(w, panels.data(), x.data(), m, out.data(), rows, 0, kP);
    for (int t = 0; t < m; ++t) {
      for (int64_t r = 0; r < rows; ++r) {
        double want = 0;
        for (int64_t k = 0; k < cols; ++k)
          want += static_cast<double>(wf[r * cols + k]) * x[t * cols + k];
        ASSERT_NEAR(out[t * rows + r], want, 1e-4 * (1 + std::fabs(want)))
            << "m=" << m << " token " << t << " row " << r;
      }
    }
  }
}

// The activation rounding (vectorized where the build has AVX2) against the rule written out:
// scale = max |x| / 127, q = round-to-nearest-even(x / scale), half sums and s = d * sum.
TEST(Int8ActivationTest, ActivationBlocksFollowTheRoundingRule) {
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> dist(-3, 3);
  std::vector<float> x(32 * 64);
  for (auto& v : x) v = dist(rng);
  for (int i = 0; i < 32; ++i) x[32 + i] = 0.0f;               // an all-zero block
  for (int i = 0; i < 32; ++i) x[64 + i] = (i - 16) * 0.5f;    // exact halves: ties to even
  for (int i = 0; i < 32; ++i) x[96 + i] = (i - 16) * 1e-38f;  // 1 / scale would overflow
  x[128 + 5] = NAN;  // a NaN and an infinity: the block reads as NaN
  x[160 + 31] = -INFINITY;
  std::vector<cpu::ActBlockQ8> q(64);
  cpu::QuantizeActivations(x.data(), static_cast<int64_t>(x.size()), q.data());
  for (int b = 0; b < 64; ++b) {
    if (b == 4 || b == 5) {
      EXPECT_TRUE(std::isnan(q[b].d) && std::isnan(q[b].s) && std::isnan(q[b].hs[0]));
      for (int i = 0; i < 32; ++i) EXPECT_EQ(q[b].qs[i], 0);
      continue;
    }
    float amax = 0;
    for (int i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(x[32 * b + i]));
    const float d = amax / 127.0f, id = d >= FLT_MIN ? 1.0f / d : 0.0f;
    int half[2] = {0, 0};
    for (int i = 0; i < 32; ++i) {
      const float r = std::nearbyint(x[32 * b + i] * id);
      ASSERT_EQ(q[b].qs[i], static_cast<int>(r)) << "block " << b << " value " << i;
      half[i / 16] += static_cast<int>(r);
    }
    EXPECT_EQ(q[b].d, d);
    EXPECT_EQ(q[b].hs[0], d * static_cast<float>(half[0]));
    EXPECT_EQ(q[b].hs[1], d * static_cast<float>(half[1]));
    EXPECT_FLOAT_EQ(q[b].s, d * static_cast<float>(half[0] + half[1]));
  }
}

// Every token count the kernel specializes (1-4 rows per pass, then the remainder) and, for
// the 32-value types, an odd block count (the one-token loop takes blocks in pairs); Q8_0,
// Q4_0, Q4_K and Q6_K also from the 16-row packed copy (where the build has AVX512-VNNI), the
// second row group alone as well.
TEST(Int8ActivationTest, BlockDotMatchesScalarIntegerArithmetic) {
  std::mt19937 rng(9);
  std::uniform_real_distribution<float> dist(-2, 2);
  const int64_t rows = 2 * cpu::kPackRows;
  for (GgmlType type :
       {GgmlType::kQ8_0, GgmlType::kQ4_0, GgmlType::kQ4_K, GgmlType::kQ5_K, GgmlType::kQ6_K}) {
    if (!cpu::Int8Supported(type)) continue;
    auto traits = GetTypeTraits(static_cast<uint32_t>(type));
    const int64_t cols = traits->block_size == 32 ? 544 : 512;
    for (int m : {1, 2, 3, 4, 5, 8}) {
      std::vector<float> wf(rows * cols), x(m * cols);
      for (auto& v : wf) v = dist(rng);
      for (auto& v : x) v = dist(rng);
      const int64_t row_bytes = cols / traits->block_size * traits->type_size;
      std::vector<uint8_t> wq(rows * row_bytes);
      for (int64_t r = 0; r < rows; ++r)
        QuantizeRow(type, wf.data() + r * cols, wq.data() + r * row_bytes, cols);
      std::vector<cpu::ActBlockQ8> xq(m * cols / 32);
      for (int t = 0; t < m; ++t)
        cpu::QuantizeActivations(x.data() + t * cols, cols, xq.data() + t * cols / 32);
      WeightTensor w{type, rows, cols, wq.data(), row_bytes};
      std::vector<float> out(m * rows, NAN), packed_out(m * rows, NAN);
      cpu::MatMulRowsInt8(w, xq.data(), m, out.data(), rows, 0, rows);
      const bool packed = cpu::Int8PackSupported(w);
      EXPECT_EQ(packed, CHORUS_INT8_PACKED && type != GgmlType::kQ5_K) << TypeName(type);
      if (packed) {
        std::vector<uint8_t> pw(cpu::Int8PackedBytes(w));
        ASSERT_EQ(pw.size(), type == GgmlType::kQ4_K ? wq.size() / 144 * 148 : wq.size());
        constexpr int kG = cpu::kPackRows;
        cpu::PackInt8Rows(w, 0, rows / kG, pw.data());
        cpu::MatMulRowsInt8Packed(w, pw.data(), xq.data(), m, packed_out.data(), rows, kG, rows);
        cpu::MatMulRowsInt8Packed(w, pw.data(), xq.data(), m, packed_out.data(), rows, 0, kG);
      }
      // Independent oracle: dequantize both sides exactly and sum in double.
      std::vector<float> wd(cols);
      for (int64_t r = 0; r < rows; ++r) {
        DequantizeRow(type, wq.data() + r * row_bytes, wd.data(), cols);
        for (int t = 0; t < m; ++t) {
          double want = 0;
          for (int64_t i = 0; i < cols; ++i) {
            const auto& b = xq[t * cols / 32 + i / 32];
            want += static_cast<double>(wd[i]) * b.d * b.qs[i % 32];
          }
          EXPECT_NEAR(out[t * rows + r], want, 1e-4 * (1 + std::fabs(want)))
              << TypeName(type) << " m=" << m << " row " << r << " token " << t;
          if (packed) {
            EXPECT_NEAR(packed_out[t * rows + r], want, 1e-4 * (1 + std::fabs(want)))
                << "packed " << TypeName(type) << " m=" << m << " row " << r << " token " << t;
          }
        }
      }
    }
  }
}

}  // namespace
}  // namespace chorus
