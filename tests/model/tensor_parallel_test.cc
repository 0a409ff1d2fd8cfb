// Tensor parallelism with the CPU communicator (threads as ranks): TP=2 and TP=4 give the same
// logits as TP=1, for both architectures and quantized weights; bad splits are refused.
#include "chorus/model/tensor_parallel.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <future>
#include <thread>

#include "chorus/backends/cpu_backend.h"
#include "chorus/gguf/gguf_writer.h"
#include "chorus/gguf/random_model.h"
#include "random_model_file.h"

namespace chorus {
namespace {

using testing::MakeModelFile;

ForwardBatch Batch(int first, int count, int seq_blocks) {
  ForwardBatch b;
  b.max_blocks_per_seq = seq_blocks;
  for (int i = 0; i < seq_blocks; ++i) b.block_tables.push_back(i);
  for (int t = first; t < first + count; ++t) {
    b.tokens.push_back((t * 53 + 7) % 512);
    b.positions.push_back(t);
    b.seq_of_token.push_back(0);
    b.logit_rows.push_back(t - first);
  }
  return b;
}

struct Param {
  std::string arch;
  GgmlType type;
  int world;
};

class TensorParallelTest : public ::testing::TestWithParam<Param> {};

TEST_P(TensorParallelTest, LogitsMatchASingleRank) {
  RandomModelSpec spec;
  spec.arch = GetParam().arch;
  spec.weight_type = GetParam().type;
  const bool k_quant = GetTypeTraits(static_cast<uint32_t>(spec.weight_type))->block_size == 256;
  spec.dim = k_quant ? 512 : 128;  // each rank's column slice a whole number of super-blocks
  spec.n_heads = 8;
  spec.n_kv_heads = 4;
  spec.ffn_dim = k_quant ? 512 : 256;
  spec.n_layers = 2;
  spec.seed = 77;
  spec.rope_freqs = spec.arch == "llama";  // every rank applies the same divisors
  spec.k_mix = spec.weight_type == GgmlType::kQ4_K;
  auto cpu = CreateCpuBackend(1);
  auto model = Model::FromFile(MakeModelFile(spec), cpu.get());
  ASSERT_TRUE(model.ok()) << model.status();

  auto kv = KvCache::Create(cpu.get(), (*model)->config(), 4, 16);
  Transformer single(model->get(), cpu.get(), kv->get());
  std::vector<float> want_prefill, want_decode;
  ASSERT_TRUE(single.Forward(Batch(0, 12, 4), &want_prefill).ok());
  ASSERT_TRUE(single.Forward(Batch(12, 1, 4), &want_decode).ok());

  const int world = GetParam().world;
  std::vector<std::unique_ptr<Backend>> owned;
  std::vector<Backend*> backends;
  for (int r = 0; r < world; ++r) {
    owned.push_back(CreateCpuBackend(1));
    backends.push_back(owned.back().get());
  }
  auto tp = TensorParallelRunner::Create(**model, backends, CreateCpuCommunicators(world), 4, 16);
  ASSERT_TRUE(tp.ok()) << tp.status();
  std::vector<float> got_prefill, got_decode;
  ASSERT_TRUE((*tp)->Forward(Batch(0, 12, 4), &got_prefill).ok());
  ASSERT_TRUE((*tp)->Forward(Batch(12, 1, 4), &got_decode).ok());
  auto check = [](const std::vector<float>& got, const std::vector<float>& want) {
    ASSERT_EQ(got.size(), want.size());
    double scale = 0, err = 0;
    for (size_t i = 0; i < want.size(); ++i) {
      scale = std::max(scale, static_cast<double>(std::fabs(want[i])));
      err = std::max(err, static_cast<double>(std::fabs(got[i] - want[i])));
    }
    EXPECT_LT(err / scale, 1e-5);
  };
  check(got_prefill, want_prefill);
  check(got_decode, want_decode);
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, TensorParallelTest,
    ::testing::Values(Param{"llama", GgmlType::kF32, 2}, Param{"llama", GgmlType::kF32, 4},
                      Param{"qwen2", GgmlType::kF32, 2}, Param{"llama", GgmlType::kQ8_0, 2},
                      Param{"qwen2", GgmlType::kQ4_0, 2}, Param{"llama", GgmlType::kBF16, 2},
                      Param{"qwen3", GgmlType::kF32, 2}, Param{"qwen3", GgmlType::kQ8_0, 4},
                      Param{"llama", GgmlType::kQ4_K, 2}, Param{"llama", GgmlType::kQ6_K, 2}),
    [](const auto& info) {
      return info.param.arch + "_" + std::string(TypeName(info.param.type)) + "_tp" +
             std::to_string(info.param.world);
    });

TEST(TensorParallelSplitTest, RanksThatDoNotDivideTheHeadsAreRefused) {
  RandomModelSpec spec;  // 4 heads, 2 KV heads
  auto cpu = CreateCpuBackend(1);
  auto model = Model::FromFile(MakeModelFile(spec), cpu.get());
  ASSERT_TRUE(model.ok());
  auto shard = ModelShard::Create(**model, 0, 3, cpu.get());
  EXPECT_EQ(shard.status().code(), absl::StatusCode::kFailedPrecondition);
}

// A K-quant matrix split through its input columns must cut at super-block (256) boundaries:
// dim 256 over 2 ranks gives 128-column slices of attn_output, refused by name.
TEST(TensorParallelSplitTest, KQuantColumnsThatSplitInsideASuperBlockAreRefused) {
  RandomModelSpec spec;
  spec.weight_type = GgmlType::kQ4_K;
  spec.dim = spec.ffn_dim = 256;
  auto cpu = CreateCpuBackend(1);
  auto model = Model::FromFile(MakeModelFile(spec), cpu.get());
  ASSERT_TRUE(model.ok()) << model.status();
  auto shard = ModelShard::Create(**model, 0, 2, cpu.get());
  EXPECT_EQ(shard.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(shard.status().message().find("Q4_K block of 256"), std::string::npos)
      << shard.status();
}

// Rank 1 fails its first all-reduce without taking part (as a rank whose device errored returns
// early); without an abort, rank 0 would wait in that all-reduce forever.
class FailingCommunicator : public Communicator {
 public:
  explicit FailingCommunicator(std::unique_ptr<Communicator> inner) : inner_(std::move(inner)) {}
  int rank() const override { return inner_->rank(); }
  int world_size() const override { return inner_->world_size(); }
  absl::Status AllReduceSum(float*, int64_t) override {
    return absl::InternalError("injected rank failure");
  }
  void Abort() override { inner_->Abort(); }

 private:
  std::unique_ptr<Communicator> inner_;
};

TEST(TensorParallelFailureTest, ARankThatFailsAbortsTheGroupInsteadOfHanging) {
  RandomModelSpec spec;
  auto cpu = CreateCpuBackend(1);
  auto model = Model::FromFile(MakeModelFile(spec), cpu.get());
  ASSERT_TRUE(model.ok());
  std::vector<std::unique_ptr<Backend>> owned;
  std::vector<Backend*> backends;
  for (int r = 0; r < 2; ++r) {
    owned.push_back(CreateCpuBackend(1));
    backends.push_back(owned.back().get());
  }
  auto comms = CreateCpuCommunicators(2);
  Communicator* inner = comms[1].get();
  comms[1] = std::make_unique<FailingCommunicator>(std::move(comms[1]));
  auto tp = TensorParallelRunner::Create(**model, backends, std::move(comms), 4, 16);
  ASSERT_TRUE(tp.ok()) << tp.status();
  for (int attempt = 0; attempt < 2; ++attempt) {  // the aborted group keeps failing fast
    std::promise<absl::Status> done;
    auto result = done.get_future();
    std::thread run([&] {
      std::vector<float> logits;
      done.set_value((*tp)->Forward(Batch(0, 4, 4), &logits));
    });
    if (result.wait_for(std::chrono::seconds(30)) != std::future_status::ready) {
      ADD_FAILURE() << "rank 0 still waits in its all-reduce after rank 1 failed";
      inner->Abort();  // release it so that the test can end
    }
    run.join();
    const absl::Status s = result.get();
    EXPECT_FALSE(s.ok());
    EXPECT_NE(s.message().find("injected rank failure"), std::string::npos) << s;
  }
}

}  // namespace
}  // namespace chorus
