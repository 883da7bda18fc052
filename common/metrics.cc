#include "common/metrics.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace quant::metrics {
namespace {

bool ValidName(const std::string& name) {
  if (name.empty()) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    const bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':';
    if (!alpha && !(i > 0 && c >= '0' && c <= '9')) return false;
  }
  return true;
}

void Die(const std::string& what) {
  std::fprintf(stderr, "metrics: %s\n", what.c_str());
  std::abort();
}

std::string Escape(const std::string& v, bool help) {
  std::string out;
  for (char c : v) {
    if (c == '\\') out += "\\\\";
    else if (c == '\n') out += "\\n";
    else if (c == '"' && !help) out += "\\\"";
    else out += c;
  }
  return out;
}

std::string Number(double v) {
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  if (std::isnan(v)) return "NaN";
  return absl::StrFormat("%.17g", v);
}

std::string LabelText(const Labels& labels, const std::string& extra_key = "",
                      const std::string& extra_value = "") {
  std::string out;
  for (const auto& [k, v] : labels) {
    absl::StrAppend(&out, out.empty() ? "" : ",", k, "=\"", Escape(v, false), "\"");
  }
  if (!extra_key.empty()) {
    absl::StrAppend(&out, out.empty() ? "" : ",", extra_key, "=\"", extra_value, "\"");
  }
  return out.empty() ? "" : "{" + out + "}";
}

Labels Sorted(Labels labels) {
  std::sort(labels.begin(), labels.end());
  for (const auto& [k, v] : labels) {
    if (!ValidName(k) || k.starts_with("__") || k == "le") Die("bad label name " + k);
  }
  return labels;
}

}  // namespace

void Counter::Inc(double v) {
  if (!(v >= 0)) Die("counter decremented");
  std::lock_guard<std::mutex> lock(mu_);
  value_ += v;
}

double Counter::Value() const {
  std::lock_guard<std::mutex> lock(mu_);
  return value_;
}

void Gauge::Set(double v) {
  std::lock_guard<std::mutex> lock(mu_);
  value_ = v;
}

void Gauge::Add(double v) {
  std::lock_guard<std::mutex> lock(mu_);
  value_ += v;
}

double Gauge::Value() const {
  std::lock_guard<std::mutex> lock(mu_);
  return value_;
}

Histogram::Histogram(std::vector<double> bounds) : bounds_(std::move(bounds)) {
  if (!std::is_sorted(bounds_.begin(), bounds_.end())) Die("histogram bounds not ascending");
  counts_.assign(bounds_.size() + 1, 0);
}

void Histogram::Observe(double v) {
  std::lock_guard<std::mutex> lock(mu_);
  const size_t i = std::lower_bound(bounds_.begin(), bounds_.end(), v) - bounds_.begin();
  ++counts_[i];
  sum_ += v;
  ++count_;
}

Histogram::Snapshot Histogram::Get() const {
  std::lock_guard<std::mutex> lock(mu_);
  Snapshot s;
  s.bounds = bounds_;
  uint64_t running = 0;
  for (uint64_t c : counts_) {
    running += c;
    s.cumulative.push_back(running);
  }
  s.sum = sum_;
  s.count = count_;
  return s;
}

std::vector<double> DurationBounds() {
  return {0.01, 0.03, 0.1, 0.3, 1, 3, 10, 30, 100, 300, 1000, 3000, 10000};
}

Registry::Family& Registry::FamilyOf(const std::string& name, const std::string& help,
                                     Kind kind) {
  if (!ValidName(name)) Die("bad metric name " + name);
  if (kind == Kind::kCounter && !name.ends_with("_total")) Die("counter without _total: " + name);
  auto [it, inserted] = families_.try_emplace(name);
  if (inserted) {
    it->second.kind = kind;
    it->second.help = help;
  } else if (it->second.kind != kind) {
    Die("metric " + name + " registered as two kinds");
  }
  return it->second;
}

Counter& Registry::GetCounter(const std::string& name, const std::string& help,
                              const Labels& labels) {
  std::lock_guard<std::mutex> lock(mu_);
  auto& slot = FamilyOf(name, help, Kind::kCounter).counters[Sorted(labels)];
  if (!slot) slot = std::make_unique<Counter>();
  return *slot;
}

Gauge& Registry::GetGauge(const std::string& name, const std::string& help,
                          const Labels& labels) {
  std::lock_guard<std::mutex> lock(mu_);
  auto& slot = FamilyOf(name, help, Kind::kGauge).gauges[Sorted(labels)];
  if (!slot) slot = std::make_unique<Gauge>();
  return *slot;
}

Histogram& Registry::GetHistogram(const std::string& name, const std::string& help,
                                  const std::vector<double>& bounds, const Labels& labels) {
  std::lock_guard<std::mutex> lock(mu_);
  auto& slot = FamilyOf(name, help, Kind::kHistogram).histograms[Sorted(labels)];
  if (!slot) slot = std::make_unique<Histogram>(bounds);
  return *slot;
}

std::string Registry::Expose() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::string out;
  for (const auto& [name, f] : families_) {
    const char* type = f.kind == Kind::kCounter ? "counter"
                       : f.kind == Kind::kGauge ? "gauge"
                                                : "histogram";
    absl::StrAppend(&out, "# HELP ", name, " ", Escape(f.help, true), "\n# TYPE ", name, " ",
                    type, "\n");
    for (const auto& [labels, c] : f.counters) {
      absl::StrAppend(&out, name, LabelText(labels), " ", Number(c->Value()), "\n");
    }
    for (const auto& [labels, g] : f.gauges) {
      absl::StrAppend(&out, name, LabelText(labels), " ", Number(g->Value()), "\n");
    }
    for (const auto& [labels, h] : f.histograms) {
      const Histogram::Snapshot s = h->Get();
      for (size_t i = 0; i <= s.bounds.size(); ++i) {
        const std::string le = i < s.bounds.size() ? Number(s.bounds[i]) : "+Inf";
        absl::StrAppend(&out, name, "_bucket", LabelText(labels, "le", le), " ",
                        s.cumulative[i], "\n");
      }
      absl::StrAppend(&out, name, "_sum", LabelText(labels), " ", Number(s.sum), "\n");
      absl::StrAppend(&out, name, "_count", LabelText(labels), " ", s.count, "\n");
    }
  }
  return out;
}

Registry& Default() {
  static Registry* r = new Registry();  // never destroyed: metrics outlive static teardown
  return *r;
}

int64_t ResidentBytes() {
  FILE* f = std::fopen("/proc/self/statm", "r");
  if (f == nullptr) return 0;
  long pages_total = 0, pages_resident = 0;
  const int n = std::fscanf(f, "%ld %ld", &pages_total, &pages_resident);
  std::fclose(f);
  return n == 2 ? static_cast<int64_t>(pages_resident) * sysconf(_SC_PAGESIZE) : 0;
}

}  // namespace quant::metrics
