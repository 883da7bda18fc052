#include "worker/tasks/slq_files.h"

#include <gtest/gtest.h>

namespace quant::tasks {
namespace {

const std::vector<SlqUnitTable> kTable = {{"a", 300, {2, 4}, {0.5, 0.1}},
                                          {"b", 100, {3, 8}, {0.2, 0.0}}};

TEST(SlqFiles, ProbeCacheRoundTrips) {
  ProbeTable t;
  t["a"][2] = {0.25, 0.125};
  t["a"][8] = {1e-6, 2e-6};
  t["b"][3] = {0.5, 0.0};
  auto back = ParseProbeCache(SerializeProbeCache(t), "c.json");
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->size(), 2u);
  EXPECT_DOUBLE_EQ((*back)["a"][2].kl, 0.25);
  EXPECT_DOUBLE_EQ((*back)["a"][8].ear_loss, 2e-6);
  EXPECT_DOUBLE_EQ((*back)["b"][3].kl, 0.5);
}

TEST(SlqFiles, ProbeCacheFailureModes) {
  for (const char* bad : {"", "not json", "[]", "{}", "{\"probes\": 3}",
                          "{\"probes\": {\"a\": 3}}",
                          "{\"probes\": {\"a\": {\"x\": {\"kl\": 1, \"ear_loss\": 1}}}}",
                          "{\"probes\": {\"a\": {\"0\": {\"kl\": 1, \"ear_loss\": 1}}}}",
                          "{\"probes\": {\"a\": {\"2\": {\"kl\": 1}}}}",
                          "{\"probes\": {\"a\": {\"2\": {\"kl\": \"1\", \"ear_loss\": 1}}}}"}) {
    auto r = ParseProbeCache(bad, "c.json");
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_NE(r.status().message().find("c.json"), std::string::npos);
  }
}

TEST(SlqFiles, EarPerRootKlIsTheUpperQuartileOverTheTwoLowestCandidates) {
  ProbeTable t;
  // ear_loss / sqrt(kl): a: 2 bits 0.5, 3 bits 0.4, 4 bits 0.1 (not taken); b: 3 bits 0.3
  // (2 bits not a candidate), 4 bits 0.6; c: zero KL (skipped).
  t["a"][2] = {0.04, 0.1};
  t["a"][3] = {0.01, 0.04};
  t["a"][4] = {0.0001, 0.001};
  t["b"][2] = {1.0, 0.9};
  t["b"][3] = {0.04, 0.06};
  t["b"][4] = {0.01, 0.06};
  t["c"][2] = {0.0, 0.0};
  EXPECT_NEAR(EarPerRootKl(t, {3, 4, 8}), 0.4, 1e-12);  // a: 0.4, 0.1; b: 0.3, 0.6 -> 0.1 0.3 [0.4] 0.6
  EXPECT_NEAR(EarPerRootKl(t, {2, 3, 4}), 0.5, 1e-12);  // a: 0.5, 0.4; b: 0.9, 0.3 -> 0.3 0.4 [0.5] 0.9
  EXPECT_EQ(EarPerRootKl(ProbeTable{}, {2, 3}), 0.0);
}

TEST(SlqFiles, AllocationAcceptsOneCandidatePerUnit) {
  auto a = ParseAllocation(R"({"a": 4, "b": 3})", "alloc.json", kTable);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->bits, (std::vector<int>{4, 3}));
  EXPECT_DOUBLE_EQ(a->average_bits, (4.0 * 300 + 3.0 * 100) / 400);
}

TEST(SlqFiles, AllocationFailureModes) {
  for (const char* bad : {"", "[1, 2]", "{\"a\": 4}", "{\"a\": 4, \"b\": 5}",
                          "{\"a\": 4, \"b\": 3.5}", "{\"a\": \"4\", \"b\": 3}",
                          "{\"a\": 4, \"b\": 3, \"c\": 2}"}) {
    auto r = ParseAllocation(bad, "alloc.json", kTable);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_NE(r.status().message().find("alloc.json"), std::string::npos);
  }
}

}  // namespace
}  // namespace quant::tasks
