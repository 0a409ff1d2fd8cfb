// Host-side planning for device backends, kept free of CUDA so that it is unit-tested on every
// machine (tests/backends/device_plan_test.cc):
//   OpTape         records a forward's ops instead of launching them, and replays a captured
//                  device graph when the same ops with the same arguments come again (decode
//                  steps of a given batch shape);
//   PlanQueryTiles groups a batch's query tokens into tiles for the tiled prefill attention;
//   RoundUpPow2    the bucketing that keeps graph arguments stable while sequences grow.
// The CUDA backend's fusion rules, host-side as well, are in fusion.h.
#pragma once

#include <cstdint>
#include <cstring>
#include <functional>
#include <list>
#include <memory>
#include <unordered_map>
#include <vector>

namespace chorus {

// Smallest power of two >= v (v >= 1); 1 for v <= 1.
int64_t RoundUpPow2(int64_t v);

// The device side of graph capture (the CUDA backend implements it with stream capture).
class GraphDriver {
 public:
  virtual ~GraphDriver() = default;
  // Starts recording launches instead of running them; false: capture is unavailable.
  virtual bool BeginCapture() = 0;
  // Ends recording; the instantiated graph, or null when capture or instantiation failed (the
  // stream is then usable again and nothing recorded ran).
  virtual void* EndCapture() = 0;
  // Launches a graph on the stream; false on failure.
  virtual bool Launch(void* graph) = 0;
  virtual void Destroy(void* graph) = 0;
};

// Ops of one forward segment, deferred. Each op comes with its signature: an op id and every
// argument that a launch bakes in (device pointers, sizes, scalars as bits). Flush() runs the
// segment one of three ways:
//   replay   a graph captured for exactly this signature exists: one graph launch;
//   capture  the segment is capturable and this signature was seen before: record a graph,
//            then launch it (later identical segments replay it);
//   eager    otherwise (first sight, not capturable, capture failed): run the ops in order.
// Anything an op needs allocated must be allocated when the op is pushed, never inside it, and
// memory a pending op uses must not be freed before Flush (the backend flushes first).
class OpTape {
 public:
  enum class Outcome { kEmpty, kEager, kCaptured, kReplayed };
  struct Stats {
    int64_t eager = 0, captured = 0, replayed = 0, capture_failures = 0, evicted = 0;
  };

  // driver may be null (never capture). At most max_graphs graphs are kept (least recently
  // used evicted first).
  OpTape(GraphDriver* driver, size_t max_graphs);
  ~OpTape();
  OpTape(const OpTape&) = delete;
  OpTape& operator=(const OpTape&) = delete;

  // Whether the ops pushed from now until the next Flush may be captured.
  void set_capturable(bool capturable) { capturable_ = capturable; }
  bool pending() const { return !ops_.empty(); }

  void Push(std::initializer_list<uint64_t> signature, std::function<void()> op);
  Outcome Flush();
  // Drops every graph (the backend calls it when memory that graphs point into is freed).
  void Clear();
  const Stats& stats() const { return stats_; }
  size_t graphs() const { return graphs_.size(); }

  template <typename T>
  static uint64_t Word(T v) {
    uint64_t w = 0;
    static_assert(sizeof(T) <= sizeof(w));
    std::memcpy(&w, &v, sizeof(T));
    return w;
  }

 private:
  struct Graph {
    std::vector<uint64_t> signature;
    void* exec;
    std::list<uint64_t>::iterator lru;
  };
  void RunEager();

  GraphDriver* driver_;
  size_t max_graphs_;
  bool capturable_ = false;
  std::vector<std::function<void()>> ops_;
  std::vector<uint64_t> signature_;
  std::unordered_multimap<uint64_t, Graph> graphs_;  // by signature hash
  std::list<uint64_t> lru_;                          // hashes, most recent first
  std::unordered_map<uint64_t, int> seen_;           // signature hash -> times run eagerly
  Stats stats_;
};

// A run of query tokens of one sequence at consecutive positions (batch rows first ..
// first + count - 1, positions first_pos ..).
struct QueryTile {
  int32_t first;
  int32_t count;
};
struct AttentionPlan {
  std::vector<QueryTile> tiles;  // for the tiled prefill kernel
  std::vector<int32_t> singles;  // batch rows left to the split (flash-decoding) kernel
};
// Tiles of at most max_tile rows for runs of at least min_tile rows; the rest are singles.
AttentionPlan PlanQueryTiles(const int32_t* positions, const int32_t* seq_of_token, int num_tokens,
                             int max_tile, int min_tile);

}  // namespace chorus
