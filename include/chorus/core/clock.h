// Time source behind an interface so tests can drive deadlines and budgets with a fake clock.
#pragma once

#include <atomic>
#include <chrono>

namespace chorus {

class Clock {
 public:
  virtual ~Clock() = default;
  // Milliseconds on a monotonic clock (arbitrary origin).
  virtual double NowMs() const = 0;
};

class RealClock : public Clock {
 public:
  double NowMs() const override {
    return std::chrono::duration<double, std::milli>(
               std::chrono::steady_clock::now().time_since_epoch())
        .count();
  }
};

// Thread-safe manual clock for tests.
class FakeClock : public Clock {
 public:
  explicit FakeClock(double start_ms = 1000.0) : now_(start_ms) {}
  double NowMs() const override { return now_.load(); }
  void AdvanceMs(double ms) { now_.store(now_.load() + ms); }
  void SetMs(double ms) { now_.store(ms); }

 private:
  std::atomic<double> now_;
};

}  // namespace chorus
