// The per-layer calibration of per-expert SLQ probes: grouping, the fitted power law, and the
// solves under each model against brute force on small tables.
#include "job/slq_expert_model.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <optional>
#include <random>

namespace quant::tasks {
namespace {

// Every allocation of a small table, the separable objective (sum of the rows' losses).
SlqSolveFn BruteForceSolve() {
  return [](const std::vector<SlqUnitTable>& table, bool target,
            double limit) -> absl::StatusOr<SlqAllocation> {
    std::vector<size_t> k(table.size(), 0);
    double params = 0;
    for (const SlqUnitTable& row : table) params += static_cast<double>(row.params);
    std::optional<SlqAllocation> best;
    double best_objective = 0;
    while (true) {
      double loss = 0, bits = 0;
      for (size_t i = 0; i < table.size(); ++i) {
        loss += table[i].loss[k[i]];
        bits += table[i].bits[k[i]] * static_cast<double>(table[i].params);
      }
      const bool ok = target ? loss <= limit : bits <= limit * params + 1e-9;
      const double objective = target ? bits : loss;
      if (ok && (!best || objective < best_objective)) {
        best = SlqAllocation{};
        for (size_t i = 0; i < table.size(); ++i) best->bits.push_back(table[i].bits[k[i]]);
        best->average_bits = bits / params;
        best->exact = true;
        best_objective = objective;
      }
      size_t i = 0;
      while (i < k.size() && ++k[i] == table[i].bits.size()) k[i++] = 0;
      if (i == k.size()) break;
    }
    if (!best) return absl::FailedPreconditionError("infeasible");
    return *best;
  };
}

// Two layers' experts (3 each, one projection) and one unit outside any expert group.
std::vector<SlqUnitTable> ExampleTable(std::mt19937& rng) {
  std::uniform_real_distribution<double> u(0.5, 2.0);
  std::vector<SlqUnitTable> table;
  for (int layer = 1; layer <= 2; ++layer) {
    for (int e = 0; e < 3; ++e) {
      SlqUnitTable row{"model.layers." + std::to_string(layer) + ".mlp.experts." +
                           std::to_string(e) + ".gate_up",
                       100,
                       {2, 3, 4},
                       {}};
      const double s = u(rng) * (layer == 1 ? 1.0 : 0.5);
      for (int b : row.bits) row.loss.push_back(s * std::pow(2.0, -2.0 * b) * u(rng));
      table.push_back(row);
    }
  }
  table.push_back({"model.layers.0.self_attn.o_proj", 200, {2, 3, 4}, {0.03, 0.01, 0.004}});
  return table;
}

// Tied probes that the power law with exponent r reproduces exactly at every uniform allocation.
std::map<std::string, std::map<int, double>> TiedFromPowerLaw(
    const std::vector<SlqUnitTable>& table, const std::map<std::string, double>& law) {
  std::map<std::string, std::map<int, double>> tied;
  for (const auto& [unit, r] : law) {
    for (int b : {2, 3, 4}) {
      double sum = 0;
      for (const SlqUnitTable& row : table) {
        if (TiedUnitOfExpert(row.unit) != unit) continue;
        for (size_t k = 0; k < row.bits.size(); ++k) {
          if (row.bits[k] == b) sum += std::pow(row.loss[k], r);
        }
      }
      tied[unit][b] = std::pow(sum, 1.0 / r);
    }
  }
  return tied;
}

TEST(SlqExpertModel, TiedUnitOfExpert) {
  EXPECT_EQ(TiedUnitOfExpert("model.layers.3.mlp.experts.7.gate_up"),
            "model.layers.3.mlp.experts.gate_up");
  EXPECT_EQ(TiedUnitOfExpert("model.layers.12.mlp.experts.255.down_proj"),
            "model.layers.12.mlp.experts.down_proj");
  EXPECT_EQ(TiedUnitOfExpert("model.layers.3.mlp.experts.gate_up"), "");  // already tied
  EXPECT_EQ(TiedUnitOfExpert("model.layers.3.mlp.shared_experts.gate_up"), "");
  EXPECT_EQ(TiedUnitOfExpert("model.layers.3.self_attn.qkv_a"), "");
  EXPECT_EQ(TiedUnitOfExpert("model.layers.3.mlp.experts.7"), "");
}

TEST(SlqExpertModel, ParsesNames) {
  for (auto a : {ExpertAggregation::kSum, ExpertAggregation::kScale, ExpertAggregation::kPower}) {
    auto back = ParseExpertAggregation(ExpertAggregationName(a));
    ASSERT_TRUE(back.ok());
    EXPECT_EQ(*back, a);
  }
  EXPECT_FALSE(ParseExpertAggregation("Power").ok());
  EXPECT_EQ(*ParseExpertAggregation(""), ExpertAggregation::kScale);  // the measured default
}

TEST(SlqExpertModel, PowerFitRecoversTheLaw) {
  std::mt19937 rng(7);
  const auto table = ExampleTable(rng);
  const auto tied = TiedFromPowerLaw(table, {{"model.layers.1.mlp.experts.gate_up", 1.5},
                                             {"model.layers.2.mlp.experts.gate_up", 0.7}});
  const auto groups = GroupExperts(table, tied);
  ASSERT_EQ(groups.size(), 2u);
  EXPECT_EQ(groups[0].rows.size(), 3u);
  EXPECT_NEAR(groups[0].power, 1.5, 0.011);
  EXPECT_NEAR(groups[1].power, 0.7, 0.011);
  EXPECT_LT(groups[0].fit_rms_log, 1e-2);
  // The plain sum overstates a sub-additive layer (r > 1) and understates r < 1.
  for (const auto& [bits, ratio] : SumOverTied(table, groups[0])) EXPECT_GT(ratio, 1.0) << bits;
  for (const auto& [bits, ratio] : SumOverTied(table, groups[1])) EXPECT_LT(ratio, 1.0) << bits;
}

TEST(SlqExpertModel, UniformAllocationsReproduceTheTiedProbes) {
  std::mt19937 rng(11);
  const auto table = ExampleTable(rng);
  std::map<std::string, std::map<int, double>> tied;
  tied["model.layers.1.mlp.experts.gate_up"] = {{2, 0.02}, {3, 0.004}, {4, 0.0011}};
  tied["model.layers.2.mlp.experts.gate_up"] = {{2, 0.01}, {3, 0.003}, {4, 0.0004}};
  const auto groups = GroupExperts(table, tied);
  for (int b : {2, 3, 4}) {
    std::vector<int> bits(table.size(), b);
    const double outside = table.back().loss[b - 2];
    const double want = tied["model.layers.1.mlp.experts.gate_up"][b] +
                        tied["model.layers.2.mlp.experts.gate_up"][b] + outside;
    EXPECT_NEAR(PredictedLoss(table, groups, ExpertAggregation::kScale, bits), want, 1e-12);
    double sum = 0;
    for (const SlqUnitTable& row : table) sum += row.loss[b - 2];
    EXPECT_NEAR(PredictedLoss(table, groups, ExpertAggregation::kSum, bits), sum, 1e-15);
  }
}

TEST(SlqExpertModel, ScaleSolveIsTheSolveOfTheScaledTable) {
  // Layer 1's experts overstate 4x, layer 2's not at all: at equal single-expert probes the
  // plain sum spends bits evenly, the calibrated table on layer 2.
  std::vector<SlqUnitTable> table;
  for (int layer = 1; layer <= 2; ++layer) {
    for (int e = 0; e < 2; ++e) {
      table.push_back({"model.layers." + std::to_string(layer) + ".mlp.experts." +
                           std::to_string(e) + ".down_proj",
                       100,
                       {2, 4},
                       {0.04, 0.01}});
    }
  }
  std::map<std::string, std::map<int, double>> tied;
  tied["model.layers.1.mlp.experts.down_proj"] = {{2, 0.02}, {4, 0.005}};  // sum 0.08 / 0.02
  tied["model.layers.2.mlp.experts.down_proj"] = {{2, 0.08}, {4, 0.02}};
  const auto groups = GroupExperts(table, tied);
  auto a =
      SolveWithExpertModel(table, groups, ExpertAggregation::kScale, false, 3.0, BruteForceSolve());
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->bits, (std::vector<int>{2, 2, 4, 4}));
  EXPECT_NEAR(PredictedLoss(table, groups, ExpertAggregation::kScale, a->bits), 0.02 + 0.02, 1e-12);
}

// The power model's solve: never worse under the model than its (kScale) start, within the
// budget, and the brute-force optimum of the non-separable objective on most small tables.
TEST(SlqExpertModel, PowerSolveAgainstBruteForce) {
  std::mt19937 rng(3);
  int optimal = 0;
  const int trials = 40;
  for (int t = 0; t < trials; ++t) {
    const auto table = ExampleTable(rng);
    std::uniform_real_distribution<double> r(1.0, 2.5);
    const auto tied = TiedFromPowerLaw(table, {{"model.layers.1.mlp.experts.gate_up", r(rng)},
                                               {"model.layers.2.mlp.experts.gate_up", r(rng)}});
    const auto groups = GroupExperts(table, tied);
    const double budget = 2.5 + 0.125 * (t % 8);
    auto power = SolveWithExpertModel(table, groups, ExpertAggregation::kPower, false, budget,
                                      BruteForceSolve());
    auto scale = SolveWithExpertModel(table, groups, ExpertAggregation::kScale, false, budget,
                                      BruteForceSolve());
    ASSERT_TRUE(power.ok() && scale.ok());
    EXPECT_LE(power->average_bits, budget + 1e-12);
    const double got = PredictedLoss(table, groups, ExpertAggregation::kPower, power->bits);
    EXPECT_LE(got, PredictedLoss(table, groups, ExpertAggregation::kPower, scale->bits) + 1e-15);
    // Brute force of the true (non-separable) objective.
    double best = std::numeric_limits<double>::infinity();
    std::vector<int> bits(table.size(), 2);
    while (true) {
      double used = 0, params = 0;
      for (size_t i = 0; i < table.size(); ++i) {
        used += bits[i] * static_cast<double>(table[i].params);
        params += static_cast<double>(table[i].params);
      }
      if (used <= budget * params + 1e-9) {
        best = std::min(best, PredictedLoss(table, groups, ExpertAggregation::kPower, bits));
      }
      size_t i = 0;
      while (i < bits.size() && ++bits[i] == 5) bits[i++] = 2;
      if (i == bits.size()) break;
    }
    EXPECT_LE(got, best * 1.10) << "trial " << t;  // a local optimum, close to the global one
    optimal += got <= best * (1 + 1e-12) ? 1 : 0;
  }
  EXPECT_GE(optimal, trials * 3 / 4);
}

TEST(SlqExpertModel, PowerTargetMeetsTheLimitUnderTheModel) {
  std::mt19937 rng(5);
  for (int t = 0; t < 20; ++t) {
    const auto table = ExampleTable(rng);
    const auto tied = TiedFromPowerLaw(table, {{"model.layers.1.mlp.experts.gate_up", 1.7},
                                               {"model.layers.2.mlp.experts.gate_up", 1.3}});
    const auto groups = GroupExperts(table, tied);
    std::vector<int> uniform3(table.size(), 3);
    const double limit = PredictedLoss(table, groups, ExpertAggregation::kPower, uniform3);
    auto a = SolveWithExpertModel(table, groups, ExpertAggregation::kPower, true, limit,
                                  BruteForceSolve());
    ASSERT_TRUE(a.ok()) << a.status();
    EXPECT_LE(PredictedLoss(table, groups, ExpertAggregation::kPower, a->bits), limit * (1 + 1e-9));
  }
}

TEST(SlqExpertModel, SumIgnoresTheGroups) {
  std::mt19937 rng(9);
  const auto table = ExampleTable(rng);
  const auto tied = TiedFromPowerLaw(table, {{"model.layers.1.mlp.experts.gate_up", 2.0}});
  const auto groups = GroupExperts(table, tied);
  auto a =
      SolveWithExpertModel(table, groups, ExpertAggregation::kSum, false, 3.0, BruteForceSolve());
  auto b = BruteForceSolve()(table, false, 3.0);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->bits, b->bits);
}

}  // namespace
}  // namespace quant::tasks
