#include "job/slq_files.h"

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

TEST(SlqFiles, EarLossesAddInQuadratureWithTheMargin) {
  EXPECT_NEAR(PredictedEarLoss(0.03 * 0.03 + 0.04 * 0.04), kEarMargin * 0.05, 1e-12);
  EXPECT_EQ(PredictedEarLoss(0.0), 0.0);
  EXPECT_EQ(PredictedEarLoss(-1e-18), 0.0);  // rounding below zero
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
