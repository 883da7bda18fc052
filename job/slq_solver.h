// The SLQ bit allocation (DESIGN.md section 6): a multiple-choice knapsack over items (units, or
// groups of tied units), each with a table of options (bitwidth -> predicted loss). Two
// problems: minimise predicted loss under a total-bits budget, or minimise total bits under a
// predicted-loss limit (the EAR target). Exact by dynamic programming over the bit cost when the
// table is small; Lagrangian relaxation with greedy repair otherwise, reporting the dual bound
// and so the optimality gap. Tables need not be convex (nor monotone) in the bits.
// Torch-free: the coordinator links it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "job/slq_tables.h"

namespace quant::slq {

struct Option {
  int bits = 0;
  double loss = 0.0;  // predicted contribution (KL, or 1 - EAR) of this item at these bits
};

struct Item {
  std::string name;
  int64_t params = 0;           // weights in the item; its cost at b bits is b * params
  std::vector<Option> options;  // at least one; any order
};

enum class Method { kAuto, kExact, kLagrangian };

struct SolveOptions {
  Method method = Method::kAuto;
  // kAuto uses the exact DP when items x capacity (in units of the params' gcd) x options stays
  // under this many cells.
  int64_t max_dp_cells = 50'000'000;
};

struct Solution {
  std::vector<int> choice;       // per item: index into its options
  double loss = 0.0;             // sum of the chosen options' losses
  int64_t bits = 0;              // sum of bits * params
  double average_bits = 0.0;     // bits / total params
  double lower_bound = 0.0;      // a proven bound on the optimum's objective (loss or bits)
  double gap = 0.0;              // (objective - lower_bound) / max(|objective|, tiny); 0: optimal
  bool exact = false;            // solved by the DP (gap is 0)
};

// Minimises the total loss subject to sum(bits * params) <= average_bits * sum(params).
absl::StatusOr<Solution> SolveBudget(const std::vector<Item>& items, double average_bits,
                                     const SolveOptions& options = {});

// Minimises sum(bits * params) subject to total loss <= max_loss.
absl::StatusOr<Solution> SolveTarget(const std::vector<Item>& items, double max_loss,
                                     const SolveOptions& options = {});

// The solve of SLQ's unit tables (job/slq_tables.h's SlqSolveFn): the budget (average bits
// <= limit, least loss) or the target (least bits with loss <= limit), as the job's solve step
// takes it; the default solver of every runner and of the coordinator.
absl::StatusOr<tasks::SlqAllocation> SolveTables(const std::vector<tasks::SlqUnitTable>& table,
                                                 bool target, double limit);

}  // namespace quant::slq
