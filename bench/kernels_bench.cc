// Google Benchmark: the CPU matmul kernel (one decode row, GEMV) per weight type, with bytes of
// weights read per second, to compare against the machine's memory bandwidth.
#include <benchmark/benchmark.h>

#include <random>
#include <vector>

#include "chorus/backends/cpu_backend.h"

namespace chorus {
namespace {

void BM_MatVec(benchmark::State& state) {
  const auto type = static_cast<GgmlType>(state.range(0));
  const int64_t rows = state.range(1), cols = state.range(2);
  const int tokens = static_cast<int>(state.range(3));
  auto traits = GetTypeTraits(static_cast<uint32_t>(type));
  const int64_t row_bytes = cols / traits->block_size * traits->type_size;
  std::vector<uint8_t> data(row_bytes * rows);
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> dist(-1, 1);
  std::vector<float> row(cols), x(cols * tokens), out(rows * tokens), scratch(4 * cols);
  for (int64_t r = 0; r < rows; ++r) {
    for (auto& v : row) v = dist(rng);
    QuantizeRow(type, row.data(), data.data() + r * row_bytes, cols);
  }
  for (auto& v : x) v = dist(rng);
  WeightTensor w{type, rows, cols, data.data(), row_bytes};
  for (auto _ : state) {
    cpu::MatMulRows(w, x.data(), tokens, out.data(), rows, 0, rows, scratch.data());
    benchmark::DoNotOptimize(out.data());
  }
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(data.size()));
  state.SetLabel(std::string(traits->name));
}

BENCHMARK(BM_MatVec)
    ->ArgNames({"type", "rows", "cols", "tokens"})
    ->Args({0, 2048, 2048, 1})
    ->Args({1, 2048, 2048, 1})
    ->Args({30, 2048, 2048, 1})
    ->Args({8, 2048, 2048, 1})
    ->Args({2, 2048, 2048, 1})
    ->Args({8, 2048, 2048, 8})
    ->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace chorus

BENCHMARK_MAIN();
