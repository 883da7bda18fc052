// The SLQ solve at Kimi-K2 size: 100,000 units x {2,3,4,5,6,8} bits with synthetic, non-convex
// tables, both problems, against a floor measured in the same run (one pass summing every
// option of the table). Prints one JSON line per problem.
// Usage: slq_solver_bench [units] [average_bits] [seed]
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>

#include "job/slq_solver.h"

using namespace quant::slq;
using Clock = std::chrono::steady_clock;

static double Since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

int main(int argc, char** argv) {
  const int units = argc > 1 ? std::atoi(argv[1]) : 100000;
  const double avg = argc > 2 ? std::atof(argv[2]) : 3.5;
  const unsigned seed = argc > 3 ? static_cast<unsigned>(std::atoi(argv[3])) : 1;
  std::mt19937 rng(seed);
  std::lognormal_distribution<double> sensitivity(0.0, 1.5);
  std::uniform_real_distribution<double> noise(0.7, 1.3);
  std::vector<Item> items(units);
  const int bits[] = {2, 3, 4, 5, 6, 8};
  for (int i = 0; i < units; ++i) {
    items[i].name = "u" + std::to_string(i);
    // Kimi-K2 shapes: expert projections 2048 x 7168 (gate/up tied: twice that), attention.
    items[i].params = i % 3 == 0 ? 2LL * 2048 * 7168 : i % 3 == 1 ? 2048LL * 7168 : 7168LL * 1536;
    const double s = sensitivity(rng) * 1e-6;
    for (int b : bits) items[i].options.push_back({b, s * std::pow(4.0, -b) * noise(rng)});
  }
  auto t0 = Clock::now();
  double sum = 0;
  for (int r = 0; r < 10; ++r) {
    for (const Item& it : items) {
      for (const Option& o : it.options) sum += o.loss * o.bits;
    }
  }
  const double floor_s = Since(t0) / 10;

  t0 = Clock::now();
  absl::StatusOr<Solution> budget = SolveBudget(items, avg);
  const double budget_s = Since(t0);
  if (!budget.ok()) {
    std::fprintf(stderr, "%s\n", budget.status().ToString().c_str());
    return 1;
  }
  std::printf("{\"problem\":\"budget\",\"units\":%d,\"average_bits\":%.4f,\"loss\":%.6e,"
              "\"gap\":%.3e,\"exact\":%s,\"seconds\":%.4f,\"floor_seconds\":%.6f,"
              "\"over_floor\":%.1f,\"checksum\":%.3e}\n",
              units, budget->average_bits, budget->loss, budget->gap,
              budget->exact ? "true" : "false", budget_s, floor_s, budget_s / floor_s, sum);
  t0 = Clock::now();
  absl::StatusOr<Solution> target = SolveTarget(items, budget->loss);
  const double target_s = Since(t0);
  if (!target.ok()) {
    std::fprintf(stderr, "%s\n", target.status().ToString().c_str());
    return 1;
  }
  std::printf("{\"problem\":\"target\",\"units\":%d,\"average_bits\":%.4f,\"loss\":%.6e,"
              "\"gap\":%.3e,\"exact\":%s,\"seconds\":%.4f,\"floor_seconds\":%.6f,"
              "\"over_floor\":%.1f}\n",
              units, target->average_bits, target->loss, target->gap,
              target->exact ? "true" : "false", target_s, floor_s, target_s / floor_s);
  return 0;
}
