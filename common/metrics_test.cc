// Our Prometheus registry: values, the exact text of a small exposition, label escaping, and
// `promtool check metrics` (Debian's prometheus package, installed by scripts/install-deps.sh)
// accepting a full exposition with no lint warning.
#include "common/metrics.h"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

namespace quant::metrics {
namespace {

TEST(Metrics, SmallExpositionIsExact) {
  Registry r;
  r.GetCounter("quant_tasks_total", "Tasks by state.", {{"state", "done"}}).Inc(3);
  r.GetCounter("quant_tasks_total", "Tasks by state.", {{"state", "failed"}}).Inc();
  r.GetGauge("quant_workers", "Registered workers.").Set(2);
  Histogram& h = r.GetHistogram("quant_task_seconds", "Task durations.", {1, 10}, {{"kind", "gsq"}});
  h.Observe(0.5);
  h.Observe(1.0);  // le="1" is inclusive
  h.Observe(20);
  EXPECT_EQ(r.Expose(),
            "# HELP quant_task_seconds Task durations.\n"
            "# TYPE quant_task_seconds histogram\n"
            "quant_task_seconds_bucket{kind=\"gsq\",le=\"1\"} 2\n"
            "quant_task_seconds_bucket{kind=\"gsq\",le=\"10\"} 2\n"
            "quant_task_seconds_bucket{kind=\"gsq\",le=\"+Inf\"} 3\n"
            "quant_task_seconds_sum{kind=\"gsq\"} 21.5\n"
            "quant_task_seconds_count{kind=\"gsq\"} 3\n"
            "# HELP quant_tasks_total Tasks by state.\n"
            "# TYPE quant_tasks_total counter\n"
            "quant_tasks_total{state=\"done\"} 3\n"
            "quant_tasks_total{state=\"failed\"} 1\n"
            "# HELP quant_workers Registered workers.\n"
            "# TYPE quant_workers gauge\n"
            "quant_workers 2\n");
}

TEST(Metrics, SameSeriesIsOneObjectAndLabelsAreEscaped) {
  Registry r;
  Counter& a = r.GetCounter("x_total", "h", {{"b", "2"}, {"a", "1"}});
  Counter& b = r.GetCounter("x_total", "h", {{"a", "1"}, {"b", "2"}});  // label order ignored
  EXPECT_EQ(&a, &b);
  r.GetGauge("g", "help with \\ backslash", {{"path", "a\"b\\c\nd"}}).Set(1);
  const std::string text = r.Expose();
  EXPECT_NE(text.find("g{path=\"a\\\"b\\\\c\\nd\"} 1"), std::string::npos) << text;
  EXPECT_NE(text.find("# HELP g help with \\\\ backslash"), std::string::npos) << text;
}

TEST(MetricsDeathTest, MisuseIsAProgrammingError) {
  Registry r;
  EXPECT_DEATH(r.GetCounter("no_suffix", "h"), "_total");
  EXPECT_DEATH(r.GetGauge("9bad", "h"), "bad metric name");
  r.GetGauge("twice", "h");
  EXPECT_DEATH(r.GetCounter("twice", "h"), "");
  EXPECT_DEATH(r.GetCounter("c_total", "h").Inc(-1), "decremented");
}

TEST(Metrics, PromtoolAcceptsTheExposition) {
  Registry r;
  for (const char* state : {"pending", "leased", "done", "failed"}) {
    r.GetGauge("quant_tasks", "Tasks by state.", {{"state", state}}).Set(4);
  }
  r.GetCounter("quant_tokens_routed_total", "Tokens routed per expert.",
               {{"layer", "3"}, {"expert", "17"}}).Inc(5461);
  r.GetCounter("quant_lease_expiries_total", "Leases that expired.").Inc(2);
  r.GetGauge("quant_resident_memory_bytes", "Resident memory.").Set(ResidentBytes());
  r.GetHistogram("quant_task_duration_seconds", "Task durations.", DurationBounds(),
                 {{"kind", "calibrate"}}).Observe(0.42);
  const std::filesystem::path file =
      std::filesystem::temp_directory_path() / ("metrics_test_" + std::to_string(getpid()));
  {
    std::ofstream out(file);
    out << r.Expose();
  }
  const std::string cmd = "promtool check metrics < " + file.string() + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  ASSERT_NE(p, nullptr);
  std::string output;
  char buf[512];
  while (fgets(buf, sizeof(buf), p)) output += buf;
  const int status = pclose(p);
  std::filesystem::remove(file);
  ASSERT_TRUE(WIFEXITED(status));
  ASSERT_NE(WEXITSTATUS(status), 127) << "promtool is not installed (scripts/install-deps.sh)";
  EXPECT_EQ(WEXITSTATUS(status), 0) << output;
  EXPECT_GT(ResidentBytes(), 0);
}

}  // namespace
}  // namespace quant::metrics
