#include "job/slq_solver.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>

namespace quant::slq {
namespace {

constexpr int kBits[] = {2, 3, 4, 5, 6, 8};

// Random tables, deliberately not convex (nor always monotone) in the bits.
std::vector<Item> RandomItems(std::mt19937& rng, int n, int max_params) {
  std::uniform_int_distribution<int> params(1, max_params);
  std::uniform_int_distribution<int> count(1, 4);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  std::vector<Item> items;
  for (int i = 0; i < n; ++i) {
    Item item;
    item.name = "u" + std::to_string(i);
    item.params = params(rng) * 3;  // a common factor, which the DP divides out
    std::vector<int> bits(std::begin(kBits), std::end(kBits));
    std::shuffle(bits.begin(), bits.end(), rng);
    bits.resize(count(rng) + 1);
    for (int b : bits) {
      // Decreasing on average like 4^-b, with noise big enough to break convexity.
      item.options.push_back({b, std::pow(4.0, -b) * (0.3 + 1.4 * u(rng)) + 0.001 * u(rng)});
    }
    items.push_back(item);
  }
  return items;
}

struct Best {
  double loss = INFINITY;
  int64_t bits = 0;
  bool found = false;
};

// Calls visit(loss, bits) for every allocation.
template <typename Visit>
void Enumerate(const std::vector<Item>& items, Visit visit) {
  std::vector<size_t> k(items.size(), 0);
  while (true) {
    double loss = 0;
    int64_t bits = 0;
    for (size_t i = 0; i < items.size(); ++i) {
      loss += items[i].options[k[i]].loss;
      bits += items[i].options[k[i]].bits * items[i].params;
    }
    visit(loss, bits);
    size_t i = 0;
    while (i < items.size() && ++k[i] == items[i].options.size()) k[i++] = 0;
    if (i == items.size()) break;
  }
}

// The optimum of each problem, by enumeration.
Best BruteBudget(const std::vector<Item>& items, double avg) {
  int64_t params = 0;
  for (const Item& it : items) params += it.params;
  const double cap = avg * static_cast<double>(params);
  Best best;
  Enumerate(items, [&](double loss, int64_t bits) {
    if (bits <= cap + 1e-9 && loss < best.loss) best = {loss, bits, true};
  });
  return best;
}

Best BruteTarget(const std::vector<Item>& items, double max_loss) {
  Best best;
  best.bits = INT64_MAX;
  Enumerate(items, [&](double loss, int64_t bits) {
    if (loss <= max_loss * (1 + 1e-12) && bits < best.bits) best = {loss, bits, true};
  });
  return best;
}

// A target between the least and the largest total loss the options reach.
double RandomTarget(const std::vector<Item>& items, std::mt19937& rng) {
  double lo = 0, hi = 0;
  for (const Item& it : items) {
    double a = INFINITY, b = 0;
    for (const Option& o : it.options) a = std::min(a, o.loss), b = std::max(b, o.loss);
    lo += a;
    hi += b;
  }
  return lo + (hi - lo) * std::uniform_real_distribution<double>(0, 1)(rng);
}

double Loss(const std::vector<Item>& items, const Solution& s) {
  double loss = 0;
  for (size_t i = 0; i < items.size(); ++i) loss += items[i].options[s.choice[i]].loss;
  return loss;
}

TEST(SlqSolver, ExactBudgetMatchesBruteForce) {
  std::mt19937 rng(1);
  for (int trial = 0; trial < 200; ++trial) {
    std::vector<Item> items = RandomItems(rng, 1 + trial % 7, 20);
    const double avg = 2.0 + 6.0 * std::uniform_real_distribution<double>(0, 1)(rng);
    Best brute = BruteBudget(items, avg);
    absl::StatusOr<Solution> s = SolveBudget(items, avg, {Method::kExact});
    if (!brute.found) {
      EXPECT_FALSE(s.ok()) << "trial " << trial;
      continue;
    }
    ASSERT_TRUE(s.ok()) << s.status();
    EXPECT_TRUE(s->exact);
    EXPECT_NEAR(s->loss, brute.loss, 1e-12) << "trial " << trial;
    EXPECT_NEAR(Loss(items, *s), s->loss, 1e-12);
    EXPECT_LE(s->average_bits, avg + 1e-12);
    EXPECT_EQ(s->gap, 0.0);
  }
}

TEST(SlqSolver, ExactTargetMatchesBruteForce) {
  std::mt19937 rng(2);
  for (int trial = 0; trial < 200; ++trial) {
    std::vector<Item> items = RandomItems(rng, 1 + trial % 7, 20);
    const double target = RandomTarget(items, rng);
    Best brute = BruteTarget(items, target);
    ASSERT_TRUE(brute.found);
    absl::StatusOr<Solution> s = SolveTarget(items, target, {Method::kExact});
    ASSERT_TRUE(s.ok()) << s.status();
    EXPECT_EQ(s->bits, brute.bits) << "trial " << trial;
    EXPECT_LE(s->loss, target * (1 + 1e-12));
  }
}

TEST(SlqSolver, LagrangianIsFeasibleAndBracketsTheOptimum) {
  std::mt19937 rng(3);
  for (int trial = 0; trial < 200; ++trial) {
    std::vector<Item> items = RandomItems(rng, 2 + trial % 6, 20);
    const double avg = 3.0 + 4.0 * std::uniform_real_distribution<double>(0, 1)(rng);
    Best brute = BruteBudget(items, avg);
    if (!brute.found) continue;
    absl::StatusOr<Solution> s = SolveBudget(items, avg, {Method::kLagrangian});
    ASSERT_TRUE(s.ok()) << s.status();
    EXPECT_FALSE(s->exact);
    EXPECT_LE(s->average_bits, avg + 1e-12);
    EXPECT_GE(s->loss, brute.loss - 1e-12);         // no better than the optimum
    EXPECT_LE(s->lower_bound, brute.loss + 1e-12);  // the bound is a bound
    EXPECT_NEAR(s->gap, (s->loss - s->lower_bound) / s->loss, 1e-9);
  }
}

TEST(SlqSolver, LagrangianTargetIsFeasibleAndBracketsTheOptimum) {
  std::mt19937 rng(4);
  for (int trial = 0; trial < 200; ++trial) {
    std::vector<Item> items = RandomItems(rng, 2 + trial % 6, 20);
    const double target = RandomTarget(items, rng);
    Best brute = BruteTarget(items, target);
    absl::StatusOr<Solution> s = SolveTarget(items, target, {Method::kLagrangian});
    ASSERT_TRUE(s.ok()) << s.status();
    EXPECT_LE(s->loss, target * (1 + 1e-9));
    EXPECT_GE(s->bits, brute.bits);
    EXPECT_LE(s->lower_bound, static_cast<double>(brute.bits) + 1e-6);
  }
}

TEST(SlqSolver, NonConvexTableNeedsTheExactSolve) {
  // Unit a: 3 bits buys nothing over 2, 4 bits buys a lot. A greedy that climbs one bitwidth
  // at a time stops at 2; the DP takes a to 4 and leaves b at 2.
  std::vector<Item> items = {
      {"a", 1, {{2, 1.0}, {3, 0.99}, {4, 0.1}}},
      {"b", 1, {{2, 0.5}, {3, 0.3}, {4, 0.25}}},
  };
  absl::StatusOr<Solution> s = SolveBudget(items, 3.0, {Method::kExact});
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(items[0].options[s->choice[0]].bits, 4);
  EXPECT_EQ(items[1].options[s->choice[1]].bits, 2);
  EXPECT_DOUBLE_EQ(s->loss, 0.6);
}

TEST(SlqSolver, AutoPicksExactOnSmallTables) {
  std::mt19937 rng(5);
  std::vector<Item> items = RandomItems(rng, 6, 10);
  absl::StatusOr<Solution> s = SolveBudget(items, 8.0);
  ASSERT_TRUE(s.ok());
  EXPECT_TRUE(s->exact);
}

TEST(SlqSolver, RejectsBadInput) {
  EXPECT_FALSE(SolveBudget({}, 4.0).ok());
  EXPECT_FALSE(SolveBudget({{"a", 0, {{2, 1.0}}}}, 4.0).ok());
  EXPECT_FALSE(SolveBudget({{"a", 10, {}}}, 4.0).ok());
  EXPECT_FALSE(SolveBudget({{"a", 10, {{0, 1.0}}}}, 4.0).ok());
  EXPECT_FALSE(SolveBudget({{"a", 10, {{2, NAN}}}}, 4.0).ok());
  absl::StatusOr<Solution> low = SolveBudget({{"a", 10, {{3, 1.0}, {4, 0.5}}}}, 2.5);
  ASSERT_FALSE(low.ok());
  EXPECT_NE(low.status().message().find("below the smallest allocation"), std::string::npos);
  absl::StatusOr<Solution> tight = SolveTarget({{"a", 10, {{3, 1.0}, {4, 0.5}}}}, 0.1);
  ASSERT_FALSE(tight.ok());
  EXPECT_NE(tight.status().message().find("least the options reach"), std::string::npos);
}

}  // namespace
}  // namespace quant::slq
