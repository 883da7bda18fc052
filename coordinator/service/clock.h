// The coordinator's clock, an interface so that lease expiry, gang formation and backoff are
// unit-tested with a fake one (STYLE.md 5). Seconds as a double, the unit the state store takes.
#pragma once

#include <atomic>
#include <chrono>

namespace quant::coordinator {

// Seconds on the coordinator's clock (monotonic within a process, wall time across restarts so
// that leases stored before a restart keep their meaning).
inline double Now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

class Clock {
 public:
  virtual ~Clock() = default;
  virtual double Now() const = 0;
};

// Now() above: what the service runs on.
class SystemClock final : public Clock {
 public:
  double Now() const override { return coordinator::Now(); }
};

// Time that moves only when a test says so (thread-safe).
class FakeClock final : public Clock {
 public:
  explicit FakeClock(double start_seconds = 1000) : now_(start_seconds) {}
  double Now() const override { return now_.load(); }
  void Advance(double seconds) { now_.store(now_.load() + seconds); }

 private:
  std::atomic<double> now_;
};

}  // namespace quant::coordinator
