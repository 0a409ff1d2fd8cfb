// A small cooperative CUDA emulator, so that the kernels in kernels/ and the CUDA backend run
// (slowly) on a machine without a GPU: tests/cuda_emu/README.md.
//
// Every thread of a block is a ucontext fiber; blocks run one after another on the calling
// thread. __syncthreads is a block barrier and a warp shuffle a 32-lane barrier with a value
// exchange, so a kernel that reads shared memory before another thread wrote it, or that
// overwrites it while others still read, sees wrong values here too (shared and dynamic shared
// memory start as garbage). Static __shared__ variables (rewritten by cu2cc.py) live in a per-block
// area filled with fresh garbage for every block, so a block that reads one before writing it,
// or expects another block's values there, fails here as on a GPU. Not emulated: timing, the memory model beyond program order, warp divergence rules.
#pragma once

#include <ucontext.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <numeric>
#include <vector>

struct dim3 {
  unsigned x, y, z;
  dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {}
};
struct float4 {
  float x, y, z, w;
};
struct uint4 {
  unsigned x, y, z, w;
};
struct float2 {
  float x, y;
};
struct uint2 {
  unsigned x, y;
};
using cudaError_t = int;
using cudaStream_t = void*;
constexpr int cudaSuccess = 0;
constexpr int cudaErrorInvalidValue = 1;
constexpr int cudaErrorInvalidConfiguration = 9;

#define __global__
#define __device__
#define __host__
#define __launch_bounds__(...)
#define __forceinline__ inline
#define CUDART_INF_F INFINITY

namespace emu {

inline int& LastError() {
  thread_local int e = 0;
  return e;
}

// Stream capture (emu_rt.h): launches are recorded instead of run while capturing.
inline bool& Capturing() {
  thread_local bool c = false;
  return c;
}
struct GraphData {
  std::vector<std::function<void()>> ops;
};
inline GraphData*& CaptureGraph() {
  thread_local GraphData* g = nullptr;
  return g;
}

// Context switches: a few lines of assembly on x86-64 Linux (glibc's swapcontext makes a
// signal-mask system call per switch, which dominates the run time), ucontext elsewhere.
#if defined(__x86_64__) && defined(__linux__)
#define CHORUS_EMU_FAST_SWITCH 1
extern "C" void chorus_emu_switch(void** save_sp, void* load_sp);  // emu_switch.cc
#endif

struct Fiber {
#ifdef CHORUS_EMU_FAST_SWITCH
  void* sp = nullptr;
#else
  ucontext_t ctx;
#endif
  std::vector<char> stack;
  bool done = false;
};

struct State {
  dim3 grid, block, block_idx;
  int threads = 0;
  int cur = 0;
  std::vector<Fiber> fibers;
#ifdef CHORUS_EMU_FAST_SWITCH
  void* scheduler_sp = nullptr;
#else
  ucontext_t scheduler;
#endif
  int barrier_count = 0;
  unsigned barrier_gen = 0;
  double warp_val[32][32];
  int warp_arrived[32];
  unsigned warp_gen[32];
  std::vector<char> dynamic;
  // Static __shared__ variables of the running block: (name, line) -> storage, emptied per block.
  struct StaticVar {
    const char* name;
    int line;
    std::unique_ptr<char[]> bytes;
  };
  std::vector<StaticVar> statics;
  std::function<void()> body;
  uint64_t launches = 0;
};
// One emulated device per OS thread that launches: tensor-parallel ranks run kernels
// concurrently on their own threads.
inline State& S() {
  thread_local State s;
  return s;
}

// Fiber -> scheduler.
inline void Yield() {
  State& s = S();
#ifdef CHORUS_EMU_FAST_SWITCH
  chorus_emu_switch(&s.fibers[s.cur].sp, s.scheduler_sp);
#else
  swapcontext(&s.fibers[s.cur].ctx, &s.scheduler);
#endif
}

inline void Entry() {
  State& s = S();
  s.body();
  s.fibers[s.cur].done = true;
  Yield();  // never resumed
  std::abort();
}

// Scheduler -> fiber t.
inline void Resume(int t) {
  State& s = S();
  s.cur = t;
#ifdef CHORUS_EMU_FAST_SWITCH
  chorus_emu_switch(&s.scheduler_sp, s.fibers[t].sp);
#else
  swapcontext(&s.scheduler, &s.fibers[t].ctx);
#endif
}

// Prepares fiber t to start at Entry on its own stack.
inline void Start(Fiber& f) {
  if (f.stack.empty()) f.stack.resize(128 * 1024);
  f.done = false;
#ifdef CHORUS_EMU_FAST_SWITCH
  // chorus_emu_switch pops six callee-saved registers and returns: the return address is Entry,
  // placed so that Entry starts with the stack aligned as after a call.
  uintptr_t top = reinterpret_cast<uintptr_t>(f.stack.data() + f.stack.size()) & ~uintptr_t{15};
  void** sp = reinterpret_cast<void**>(top - 16);
  sp[0] = reinterpret_cast<void*>(&Entry);
  sp -= 6;
  for (int i = 0; i < 6; ++i) sp[i] = nullptr;
  f.sp = sp;
#else
  getcontext(&f.ctx);
  f.ctx.uc_stack.ss_sp = f.stack.data();
  f.ctx.uc_stack.ss_size = f.stack.size();
  f.ctx.uc_link = nullptr;
  makecontext(&f.ctx, Entry, 0);
#endif
}

inline void SyncThreads() {
  State& s = S();
  const unsigned gen = s.barrier_gen;
  if (++s.barrier_count == s.threads) {
    s.barrier_count = 0;
    ++s.barrier_gen;
    return;
  }
  while (s.barrier_gen == gen) Yield();
}

// One barrier among the live lanes of the calling thread's warp.
inline void WarpBarrier() {
  State& s = S();
  const int w = s.cur / 32;
  int live = 0;
  for (int l = 0; l < 32 && w * 32 + l < s.threads; ++l) live += !s.fibers[w * 32 + l].done;
  const unsigned gen = s.warp_gen[w];
  if (++s.warp_arrived[w] == live) {
    s.warp_arrived[w] = 0;
    ++s.warp_gen[w];
    return;
  }
  while (s.warp_gen[w] == gen) Yield();
}

// Every lane deposits v; each then reads lane src's value.
inline double Exchange(double v, int src) {
  State& s = S();
  const int w = s.cur / 32;
  s.warp_val[w][s.cur % 32] = v;
  WarpBarrier();
  const double r = s.warp_val[w][src & 31];
  WarpBarrier();  // nobody deposits the next value before everyone has read this one
  return r;
}

inline void RunNow(dim3 grid, dim3 block, size_t dynamic_bytes, const std::function<void()>& body) {
  State& s = S();
  s.grid = grid;
  s.block = block;
  s.threads = static_cast<int>(block.x * block.y * block.z);
  s.body = body;
  s.dynamic.resize(dynamic_bytes + 64);
  if (s.fibers.size() < static_cast<size_t>(s.threads)) s.fibers.resize(s.threads);
  // Blocks run in a shuffled order (a GPU gives no order between blocks), and each launch
  // resumes the threads of a block in ascending or descending order, so results that depend on
  // which block or thread runs first differ between launches and fail the checks.
  const uint64_t blocks = static_cast<uint64_t>(grid.x) * grid.y * grid.z;
  const uint64_t launch = ++s.launches;
  uint64_t stride = (launch * 0x9E3779B97F4A7C15ull) % blocks | 1;  // odd: coprime with 2^k
  while (std::gcd(stride, blocks) != 1) stride += 2;
  const bool descending = launch % 2 == 0;
  for (uint64_t k = 0; k < blocks; ++k) {
    const uint64_t b = (k * stride + launch) % blocks;
    s.block_idx = dim3(static_cast<unsigned>(b % grid.x),
                       static_cast<unsigned>(b / grid.x % grid.y),
                       static_cast<unsigned>(b / (static_cast<uint64_t>(grid.x) * grid.y)));
    s.barrier_count = 0;
    std::memset(s.warp_arrived, 0, sizeof(s.warp_arrived));
    std::fill(s.dynamic.begin(), s.dynamic.end(), static_cast<char>(0xAB));  // garbage
    s.statics.clear();  // static shared memory: fresh garbage per block (StaticShared)
    for (int t = 0; t < s.threads; ++t) Start(s.fibers[t]);
    for (int remaining = s.threads; remaining > 0;) {
      remaining = 0;
      for (int i = 0; i < s.threads; ++i) {
        const int t = descending ? s.threads - 1 - i : i;
        if (s.fibers[t].done) continue;
        Resume(t);
        remaining += !s.fibers[t].done;
      }
    }
  }
}

// A kernel launch: checked like the hardware would (block size, dynamic shared memory without
// an opt-in), then run, or recorded while a stream is being captured.
inline void Launch(dim3 grid, dim3 block, size_t dynamic_bytes, std::function<void()> body) {
  const unsigned threads = block.x * block.y * block.z;
  if (threads == 0 || threads > 1024 || threads % 32 != 0 || dynamic_bytes > 48 * 1024 ||
      grid.y > 65535 || grid.z > 65535 || grid.x == 0) {
    LastError() = cudaErrorInvalidConfiguration;
    return;
  }
  if (Capturing()) {
    CaptureGraph()->ops.push_back([=] { RunNow(grid, block, dynamic_bytes, body); });
    return;
  }
  RunNow(grid, block, dynamic_bytes, body);
}

inline void* Dynamic() { return S().dynamic.data(); }

// Storage of the static __shared__ variable declared at (name, line) for the running block: every
// thread of the block gets the same bytes; the first touch in a block fills them with garbage that
// differs from block to block (every byte has its top bit set: large negative numbers).
inline void* StaticShared(const char* name, int line, size_t bytes) {
  State& s = S();
  for (auto& v : s.statics) {
    if (v.line == line && std::strcmp(v.name, name) == 0) return v.bytes.get();
  }
  std::unique_ptr<char[]> p(new char[bytes + 16]);
  const unsigned char fill = static_cast<unsigned char>(0xF1 ^ (s.block_idx.x * 13 + s.launches));
  std::memset(p.get(), fill | 0x80, bytes + 16);
  s.statics.push_back({name, line, std::move(p)});
  return s.statics.back().bytes.get();
}

}  // namespace emu

inline cudaError_t cudaGetLastError() {
  const int e = emu::LastError();
  emu::LastError() = 0;
  return e;
}

#define threadIdx                                                                              \
  (dim3(emu::S().cur % emu::S().block.x, (emu::S().cur / emu::S().block.x) % emu::S().block.y, \
        emu::S().cur / (emu::S().block.x * emu::S().block.y)))
#define blockIdx (emu::S().block_idx)
#define blockDim (emu::S().block)
#define gridDim (emu::S().grid)

inline void __syncthreads() { emu::SyncThreads(); }
namespace emu {
// A shuffle whose mask leaves out the calling lane or the lane it reads is undefined on the
// hardware: report it as a launch error (the launcher's cudaGetLastError sees it).
inline void CheckShuffleMask(unsigned mask, int src_lane) {
  const int lane = S().cur % 32;
  if (((mask >> lane) & 1u) == 0 || ((mask >> (src_lane & 31)) & 1u) == 0) {
    LastError() = 719;  // cudaErrorLaunchFailure
  }
}
}  // namespace emu
template <typename T>
T __shfl_xor_sync(unsigned mask, T v, int lane_mask) {
  emu::CheckShuffleMask(mask, (emu::S().cur % 32) ^ lane_mask);
  return static_cast<T>(emu::Exchange(static_cast<double>(v), (emu::S().cur % 32) ^ lane_mask));
}
template <typename T>
T __shfl_sync(unsigned mask, T v, int src_lane) {
  emu::CheckShuffleMask(mask, src_lane);
  return static_cast<T>(emu::Exchange(static_cast<double>(v), src_lane));
}
// Fibers never run at the same time: plain read-modify-write is atomic here.
inline int atomicMin(int* p, int v) {
  const int o = *p;
  if (v < o) *p = v;
  return o;
}
inline unsigned atomicMin(unsigned* p, unsigned v) {
  const unsigned o = *p;
  if (v < o) *p = v;
  return o;
}
inline int atomicMax(int* p, int v) {
  const int o = *p;
  if (v > o) *p = v;
  return o;
}
inline float __uint_as_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline uint32_t __float_as_uint(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return {x, y, z, w}; }
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }

// Half and bfloat16 (IEEE binary16; round to nearest even).
struct __half {
  uint16_t bits;
};
inline float EmuHalfToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  int exp = (h >> 10) & 0x1f;
  uint32_t mant = h & 0x3ffu, f;
  if (exp == 0) {
    if (mant == 0) {
      f = sign;
    } else {  // subnormal: normalize
      exp = 1;
      while ((mant & 0x400u) == 0) {
        mant <<= 1;
        --exp;
      }
      mant &= 0x3ffu;
      f = sign | (static_cast<uint32_t>(exp + 112) << 23) | (mant << 13);
    }
  } else if (exp == 31) {
    f = sign | 0x7f800000u | (mant << 13);
  } else {
    f = sign | (static_cast<uint32_t>(exp + 112) << 23) | (mant << 13);
  }
  return __uint_as_float(f);
}
inline uint16_t EmuFloatToHalf(float value) {
  uint32_t x;
  std::memcpy(&x, &value, 4);
  const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000u);
  const uint32_t abs = x & 0x7fffffffu;
  if (abs >= 0x7f800000u) return sign | (abs > 0x7f800000u ? 0x7e00 : 0x7c00);  // NaN / inf
  if (abs >= 0x477ff000u) return sign | 0x7c00;                                 // overflow
  if (abs < 0x38800000u) {  // subnormal half (or zero): shift with round to nearest even
    if (abs < 0x33000000u) return sign;
    const int e = static_cast<int>(abs >> 23);
    const uint32_t m = (abs & 0x7fffffu) | 0x800000u;
    const int shift = 126 - e;  // bits dropped: 13 + (113 - e)
    const uint32_t rounded =
        (m >> shift) + (((m >> (shift - 1)) & 1u) &
                        (((m & ((1u << (shift - 1)) - 1)) != 0) | ((m >> shift) & 1u)));
    return sign | static_cast<uint16_t>(rounded);
  }
  const uint32_t rounded = abs + 0xfffu + ((abs >> 13) & 1u);  // nearest even on bit 13
  return sign | static_cast<uint16_t>((rounded - 0x38000000u) >> 13);
}
inline float __half2float(__half h) { return EmuHalfToFloat(h.bits); }
inline __half __ushort_as_half(uint16_t u) { return {u}; }
inline __half __float2half(float f) { return {EmuFloatToHalf(f)}; }
inline __half __float2half_rn(float f) { return {EmuFloatToHalf(f)}; }
struct __nv_bfloat16 {
  uint16_t bits;
};
inline __nv_bfloat16 __float2bfloat16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  u += 0x7fffu + ((u >> 16) & 1u);
  return {static_cast<uint16_t>(u >> 16)};
}
