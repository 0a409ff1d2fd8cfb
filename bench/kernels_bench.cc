// Google Benchmark: the CPU matmul kernel (one decode row, GEMV) per weight type, with bytes of
// weights read per second, to compare against the machine's memory bandwidth; and that bandwidth
// itself (BM_ReadBandwidth: threads summing their slices of a 1 GiB buffer, far beyond the
// caches), the roofline scripts/bench-vs-llamacpp.sh reports decode speeds against.
#include <benchmark/benchmark.h>
#include <sys/mman.h>

#include <cstdint>
#include <cstdlib>
#include <mutex>
#include <random>
#include <string>
#include <vector>

#include "chorus/backends/cpu_backend.h"
#include "src/backends/cpu/cpu_int8_packed.h"

namespace chorus {
namespace {

// The benchmarks' inputs: a rows x cols matrix of `type` quantized from uniform [-1, 1) values,
// and `tokens` activation rows of the same distribution (seeded, the same every run).
struct MatMulInputs {
  MatMulInputs(GgmlType type, int64_t rows, int64_t cols, int tokens) {
    auto traits = GetTypeTraits(static_cast<uint32_t>(type));
    const int64_t row_bytes = cols / traits->block_size * traits->type_size;
    data.resize(row_bytes * rows);
    std::mt19937 rng(1);
    std::uniform_real_distribution<float> dist(-1, 1);
    std::vector<float> row(cols);
    for (int64_t r = 0; r < rows; ++r) {
      for (auto& v : row) v = dist(rng);
      QuantizeRow(type, row.data(), data.data() + r * row_bytes, cols);
    }
    x.resize(cols * tokens);
    for (auto& v : x) v = dist(rng);
    out.resize(rows * tokens);
    w = WeightTensor{type, rows, cols, data.data(), row_bytes};
    name = std::string(traits->name);
  }
  std::vector<uint8_t> data;
  std::vector<float> x, out;
  WeightTensor w;
  std::string name;
};

// Multiply-adds per second as a counter.
void CountMacs(benchmark::State& state, double macs, const char* name, double per_mac) {
  state.counters[name] = benchmark::Counter(
      static_cast<double>(state.iterations()) * macs * per_mac, benchmark::Counter::kIsRate);
}

void BM_MatVec(benchmark::State& state) {
  const int64_t rows = state.range(1), cols = state.range(2);
  const int tokens = static_cast<int>(state.range(3));
  MatMulInputs in(static_cast<GgmlType>(state.range(0)), rows, cols, tokens);
  std::vector<float> scratch(4 * cols);
  for (auto _ : state) {
    cpu::MatMulRows(in.w, in.x.data(), tokens, in.out.data(), rows, 0, rows, scratch.data());
    benchmark::DoNotOptimize(in.out.data());
  }
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(in.data.size()));
  CountMacs(state, static_cast<double>(rows) * cols * tokens, "flops", 2.0);
  state.SetLabel(in.name);
}

BENCHMARK(BM_MatVec)
    ->ArgNames({"type", "rows", "cols", "tokens"})
    ->Args({0, 2048, 2048, 1})
    ->Args({1, 2048, 2048, 1})
    ->Args({30, 2048, 2048, 1})
    ->Args({8, 2048, 2048, 1})
    ->Args({2, 2048, 2048, 1})
    ->Args({8, 2048, 2048, 8})
    // Prefill tiles: F32 weights against 64 tokens (the 110M model's shapes).
    ->Args({0, 768, 768, 64})
    ->Args({0, 2048, 768, 64})
    ->Args({0, 768, 2048, 64})
    ->Unit(benchmark::kMicrosecond);

// The int8 path over the packed copy (cpu_int8_packed.h), one thread: rows x cols of a packed
// type against `tokens` quantized activation rows. The tokens-8 / tokens-1 time ratio is the
// 8-row decode step's cost in the kernel alone.
void BM_MatMulInt8Packed(benchmark::State& state) {
  const int64_t rows = state.range(1), cols = state.range(2);
  const int tokens = static_cast<int>(state.range(3));
  MatMulInputs in(static_cast<GgmlType>(state.range(0)), rows, cols, tokens);
  if (!cpu::Int8PackSupported(in.w)) {
    state.SkipWithError("no packed layout in this build");
    return;
  }
  std::vector<uint8_t> packed(cpu::Int8PackedBytes(in.w));
  cpu::PackInt8Rows(in.w, 0, rows / cpu::kPackRows, packed.data());
  std::vector<cpu::ActBlockQ8> xq(tokens * cols / 32);
  for (int t = 0; t < tokens; ++t)
    cpu::QuantizeActivations(in.x.data() + t * cols, cols, xq.data() + t * cols / 32);
  for (auto _ : state) {
    cpu::MatMulRowsInt8Packed(in.w, packed.data(), xq.data(), tokens, in.out.data(), rows, 0, rows);
    benchmark::DoNotOptimize(in.out.data());
  }
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(packed.size()));
  CountMacs(state, static_cast<double>(rows) * cols * tokens, "gmacs", 1e-9);
  state.SetLabel(in.name);
}

BENCHMARK(BM_MatMulInt8Packed)
    ->ArgNames({"type", "rows", "cols", "tokens"})
    ->Args({8, 8192, 2048, 1})
    ->Args({8, 8192, 2048, 4})
    ->Args({8, 8192, 2048, 8})
    ->Args({2, 8192, 2048, 1})
    ->Args({2, 8192, 2048, 8})
    ->Args({12, 8192, 2048, 8})
    ->Args({14, 8192, 2048, 8})
    ->Unit(benchmark::kMicrosecond);

// Decode's matmul against the read-bandwidth probe: one token through a 71 MB Q8_0 / 38 MB Q4_0
// packed matrix (beyond this machine's L3), each thread its share of the rows, as the backend
// splits a decode matmul. bytes_per_second / BM_ReadBandwidth's at the same thread count is the
// kernel's fraction of the roofline.
void BM_DecodeRoofline(benchmark::State& state) {
  const auto type = static_cast<GgmlType>(state.range(0));
  constexpr int64_t kRows = 8192, kCols = 8192;
  struct Shared {
    MatMulInputs in;
    uint8_t* packed = nullptr;  // on huge pages, as the backend's copies
    std::vector<cpu::ActBlockQ8> xq;
  };
  static Shared* shared[32] = {};
  static std::mutex mu;
  Shared* sh;
  {
    std::lock_guard<std::mutex> lock(mu);
    auto& slot = shared[static_cast<int>(type)];
    if (slot == nullptr) {
      slot = new Shared{MatMulInputs(type, kRows, kCols, 1), nullptr, {}};
      if (cpu::Int8PackSupported(slot->in.w)) {
        const size_t bytes = cpu::Int8PackedBytes(slot->in.w);
        constexpr size_t kHuge = size_t{2} << 20;
        slot->packed =
            static_cast<uint8_t*>(std::aligned_alloc(kHuge, (bytes + kHuge - 1) / kHuge * kHuge));
        ::madvise(slot->packed, bytes, MADV_HUGEPAGE);
        cpu::PackInt8Rows(slot->in.w, 0, kRows / cpu::kPackRows, slot->packed);
        slot->xq.resize(kCols / 32);
        cpu::QuantizeActivations(slot->in.x.data(), kCols, slot->xq.data());
      }
    }
    sh = slot;
  }
  if (sh->packed == nullptr) {
    state.SkipWithError("no packed layout in this build");
    return;
  }
  const int64_t share = kRows / state.threads();
  const int64_t begin = share * state.thread_index(), end = begin + share;
  for (auto _ : state) {
    cpu::MatMulRowsInt8Packed(sh->in.w, sh->packed, sh->xq.data(), 1, sh->in.out.data(), kRows,
                              begin, end);
    benchmark::DoNotOptimize(sh->in.out.data());
  }
  state.SetBytesProcessed(state.iterations() *
                          static_cast<int64_t>(cpu::Int8PackedBytes(sh->in.w) / state.threads()));
  state.SetLabel(sh->in.name);
}

BENCHMARK(BM_DecodeRoofline)
    ->ArgNames({"type"})
    ->Arg(8)
    ->Arg(2)
    ->Threads(1)
    ->Threads(2)
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond);

// The read-bandwidth probe: the buffer is filled once (pages touched) and shared by the threads;
// thread t sums slice t with 4 independent accumulators, so loads, not adds, bound the loop.
void BM_ReadBandwidth(benchmark::State& state) {
  constexpr size_t kBytes = size_t{1} << 30;
  // Huge pages, as the CPU backend's weight copies: with 4 KiB pages the probe measures the
  // page walks of this VM, not its memory.
  static uint64_t* buffer = [] {
    auto* b = static_cast<uint64_t*>(std::aligned_alloc(size_t{2} << 20, kBytes));
    ::madvise(b, kBytes, MADV_HUGEPAGE);
    for (size_t i = 0; i < kBytes / sizeof(uint64_t); ++i) b[i] = i * 0x9e3779b97f4a7c15ull;
    return b;
  }();
  const size_t n = kBytes / sizeof(uint64_t) / static_cast<size_t>(state.threads());
  const uint64_t* p = buffer + n * static_cast<size_t>(state.thread_index());
  for (auto _ : state) {
    uint64_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
    for (size_t i = 0; i + 4 <= n; i += 4) {
      a0 += p[i];
      a1 += p[i + 1];
      a2 += p[i + 2];
      a3 += p[i + 3];
    }
    benchmark::DoNotOptimize(a0 + a1 + a2 + a3);
  }
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(n * sizeof(uint64_t)));
}

BENCHMARK(BM_ReadBandwidth)->Threads(1)->Threads(2)->UseRealTime()->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace chorus

BENCHMARK_MAIN();
