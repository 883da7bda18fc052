// A small Prometheus registry of our own (prometheus-cpp is not in Debian; DESIGN.md section 3):
// counters, gauges and histograms with labels, exposed in the text format 0.0.4 that
// `promtool check metrics` accepts without lint warnings (tested). Thread-safe. Every process
// (coordinator, worker) serves Expose() on /metrics.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace quant::metrics {

using Labels = std::vector<std::pair<std::string, std::string>>;

class Counter {
 public:
  void Inc(double v = 1.0);  // v >= 0
  double Value() const;

 private:
  mutable std::mutex mu_;
  double value_ = 0;
};

class Gauge {
 public:
  void Set(double v);
  void Add(double v);
  double Value() const;

 private:
  mutable std::mutex mu_;
  double value_ = 0;
};

class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds);  // upper bounds, ascending; +Inf is implicit
  void Observe(double v);
  struct Snapshot {
    std::vector<double> bounds;
    std::vector<uint64_t> cumulative;  // per bound, then +Inf
    double sum = 0;
    uint64_t count = 0;
  };
  Snapshot Get() const;

 private:
  mutable std::mutex mu_;
  std::vector<double> bounds_;
  std::vector<uint64_t> counts_;  // per bucket (not cumulative), last: above every bound
  double sum_ = 0;
  uint64_t count_ = 0;
};

// Bounds for durations in seconds: 0.01 s to about 2 hours, roughly x3 apart.
std::vector<double> DurationBounds();

class Registry {
 public:
  // Returns the series for (name, labels), creating it (and its family) on first use. A name is
  // one kind: asking for a counter named like an existing gauge aborts (a programming error).
  // Counter names end in "_total"; names match [a-zA-Z_:][a-zA-Z0-9_:]*.
  Counter& GetCounter(const std::string& name, const std::string& help, const Labels& labels = {});
  Gauge& GetGauge(const std::string& name, const std::string& help, const Labels& labels = {});
  Histogram& GetHistogram(const std::string& name, const std::string& help,
                          const std::vector<double>& bounds, const Labels& labels = {});

  // The text exposition of every family, families and series in a stable order.
  std::string Expose() const;

 private:
  enum class Kind { kCounter, kGauge, kHistogram };
  struct Family {
    Kind kind;
    std::string help;
    std::map<Labels, std::unique_ptr<Counter>> counters;
    std::map<Labels, std::unique_ptr<Gauge>> gauges;
    std::map<Labels, std::unique_ptr<Histogram>> histograms;
  };
  Family& FamilyOf(const std::string& name, const std::string& help, Kind kind);

  mutable std::mutex mu_;
  std::map<std::string, Family> families_;
};

// The process's registry.
Registry& Default();

// Resident memory of this process in bytes (from /proc/self/statm), for a memory gauge.
int64_t ResidentBytes();

}  // namespace quant::metrics
