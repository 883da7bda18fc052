// What SLQ's probe pass gives the global solve and what the solve gives back (DESIGN.md
// section 6): torch-free, shared by the job's tasks, the solver and the coordinator.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace quant::tasks {

// SLQ's solve (job/slq_solver.h) gets the probe table and gives a bitwidth per unit back. One entry per unit (tied linears are one unit).
struct SlqUnitTable {
  std::string unit;
  int64_t params = 0;
  std::vector<int> bits;          // candidate bitwidths
  std::vector<double> loss;       // the predicted loss at each: KL (budget) or 1 - EAR (target)
};
struct SlqAllocation {
  std::vector<int> bits;          // per unit, in the table's order
  double average_bits = 0;
  double optimality_gap = 0;
  bool exact = false;
};
// target = false: least loss with average bits <= limit; true: fewest bits with loss <= limit.
using SlqSolveFn = std::function<absl::StatusOr<SlqAllocation>(
    const std::vector<SlqUnitTable>& table, bool target, double limit)>;

}  // namespace quant::tasks
