// The serving runtime on the CUDA backend (prefix sharing, the fork's KV block copy, sampling on
// the backend, merge) gives the same drafts as on the CPU backend: the agents' uniform numbers
// come from the same seeded Samplers either way. Skips without a GPU; runs on the emulator.
#include <gtest/gtest.h>

#include <condition_variable>
#include <mutex>

#include "../collect_sink.h"
#include "../test_util.h"
#include "chorus/backends/cpu_backend.h"
#include "chorus/backends/cuda_backend.h"
#include "chorus/runtime/runtime.h"

namespace chorus {
namespace {

using testing::CollectSink;

// Drafts of one 4-agent request (temperature 0.8, a 5-token prompt: the fork copies a partial
// KV block) and of one greedy 2-agent request, on `backend`.
std::vector<std::string> Drafts(Backend* backend) {
  auto model = Model::Load(testing::SourcePath("models/stories260K.gguf"), backend);
  EXPECT_TRUE(model.ok()) << model.status();
  RealClock clock;
  RuntimeOptions o;
  o.kv_num_blocks = 64;
  o.kv_block_size = 16;
  auto rt = Runtime::Create(o, model->get(), backend, &clock);
  EXPECT_TRUE(rt.ok()) << rt.status();
  (*rt)->Start();
  std::vector<std::string> drafts;
  for (float temperature : {0.8f, 0.0f}) {
    GenerateParams p;
    p.request_id = "r";
    p.prompt_tokens = (*model)->tokenizer().Encode("Once upon a time", true, false);
    p.reasoning.agents = temperature > 0 ? 4 : 2;
    p.max_tokens = 40;
    p.sampling.temperature = temperature;
    p.sampling.seed = 11;
    p.arrival_ms = clock.NowMs();
    p.deadline_ms = p.arrival_ms + 600000;
    auto sink = std::make_shared<CollectSink>();
    EXPECT_TRUE((*rt)->Submit(std::move(p), sink).ok());
    auto r = sink->Wait();
    EXPECT_TRUE(r.ok()) << r.status();
    if (!r.ok()) continue;
    for (const auto& d : r->drafts) drafts.push_back(d.text);
    drafts.push_back("merged: " + r->text);
  }
  return drafts;  // the runtime stops before the model and backend go
}

TEST(CudaRuntimeTest, AgentsOnCudaWriteTheSameDraftsAsOnCpu) {
  if (CudaDeviceCount() == 0) GTEST_SKIP() << CudaDeviceStatus();
  CudaBackendOptions exact;
  exact.kv_f16 = false;  // the F32 cache: the logits agree with the CPU's to rounding
  auto gpu = CreateCudaBackend(0, exact);
  ASSERT_TRUE(gpu.ok()) << gpu.status();
  auto cpu = CreateCpuBackend(2);
  const auto want = Drafts(cpu.get());
  const auto got = Drafts(gpu->get());
  ASSERT_EQ(got.size(), want.size());
  ASSERT_EQ(want.size(), 8u);  // 4 + merged, 2 + merged
  for (size_t i = 0; i < want.size(); ++i) EXPECT_EQ(got[i], want[i]) << "draft " << i;
}

}  // namespace
}  // namespace chorus
