// How per-expert SLQ probes add up inside a layer (--per-expert-bits). The experts of one layer
// and projection do not add up as independent probes: the sum of their single-expert probes
// overstates the layer's end-to-end loss (measured ~2x on tiny-deepseek-v3). One tied probe per
// layer, projection and bitwidth (every expert of it at b bits, through the real quantizer)
// calibrates the layer's aggregate. Torch-free: the solve's tables only.
#pragma once

#include <functional>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "job/job_spec.h"
#include "job/slq_tables.h"

namespace quant::tasks {

// "model.layers.3.mlp.experts.7.gate_up" -> "model.layers.3.mlp.experts.gate_up" (the tied unit
// whose probe calibrates it); "" for a unit that is not one routed expert's.
std::string TiedUnitOfExpert(const std::string& unit);

// How a layer's per-expert losses s_e (at their chosen bits) combine into its predicted loss:
//   kSum:   sum_e s_e                     (independent probes; the default before calibration)
//   kScale: sum_e c(b_e) s_e(b_e), c(b) = T(b) / sum_e s_e(b)   (T: the tied probe at b bits)
//   kPower: (sum_e s_e^r)^(1/r), r fitted by least squares in log space so that the uniform
//           allocations reproduce the tied probes: per-expert perturbations that add in
//           quadrature while each probe's loss grows as |perturbation|^(2/r). One expert alone
//           gives its own probe, as measured (no free factor: with one, r would not be
//           identified, since the uniform allocations scale every expert's loss alike).
// kScale and kPower are exact at every uniform allocation of the layer (kPower up to its fit);
// they differ on mixed allocations inside a layer.
enum class ExpertAggregation { kSum, kScale, kPower };
// "" is kScale, the default: on random per-expert allocations of both tiny models it put the
// predicted KL on the measured one and kept the EAR model's margin, and it gave per-expert SLQ
// its best result against uniform on tiny-deepseek-v3 (docs/results.md).
absl::StatusOr<ExpertAggregation> ParseExpertAggregation(const std::string& name);
std::string ExpertAggregationName(ExpertAggregation a);

// One layer-projection's calibration: its rows in the solve table and its tied probe's loss per
// bitwidth (the same quantity as the rows' loss: KL, or squared 1 - EAR).
struct ExpertGroup {
  std::string tied_unit;
  std::vector<size_t> rows;         // indices into the table
  std::map<int, double> tied_loss;  // bits -> loss of the tied probe
  // Fitted (kPower): exponent r in [kMinPower, kMaxPower]; r = 1 is kSum.
  double power = 1.0;
  double fit_rms_log = 0.0;  // rms of the log-space residuals over the bitwidths
};
// The search range of r: a probe loss growing as |perturbation|^q gives r = 2 / q, so this covers
// q from 0.5 to 8, far around the fitted r of 1.0-1.6 on the tiny models (docs/results.md).
inline constexpr double kMinPower = 0.25, kMaxPower = 4.0;

// Groups the rows of `table` whose unit has a tied unit in `tied_loss` (unit -> bits -> loss);
// rows without one stay outside every group (added as they are). Fits kPower's r per group
// over the bitwidths where both the tied probe and the rows' sum are positive.
std::vector<ExpertGroup> GroupExperts(
    const std::vector<SlqUnitTable>& table,
    const std::map<std::string, std::map<int, double>>& tied_loss);

// Per bitwidth: the sum of the group's single-expert losses over its tied probe's (how much the
// plain sum overstates the layer at a uniform allocation; bitwidths without a tied probe or
// with a zero tied loss are left out).
std::map<int, double> SumOverTied(const std::vector<SlqUnitTable>& table, const ExpertGroup& g);

// The predicted total loss of an allocation (one bitwidth per table row) under `model`.
double PredictedLoss(const std::vector<SlqUnitTable>& table, const std::vector<ExpertGroup>& groups,
                     ExpertAggregation model, const std::vector<int>& bits);

// The solve under `model`. kSum and kScale are separable: one call of `solve` on the (scaled)
// table. kPower is not: it is minimised by majorisation (the layer's concave aggregate
// R^(1/r), r >= 1, lies under its tangent, so solving the tangent's separable table never
// raises the true objective; up to `max_rounds` rounds, from the uniform allocation nearest the
// budget). In target mode the tangent bounds the loss from above, so every round's allocation
// meets the limit under the model. Groups with r < 1 (convex) are linearised the same way,
// without that guarantee. The returned allocation is the best one found under the model.
absl::StatusOr<SlqAllocation> SolveWithExpertModel(const std::vector<SlqUnitTable>& table,
                                                   const std::vector<ExpertGroup>& groups,
                                                   ExpertAggregation model, bool target,
                                                   double limit, const SlqSolveFn& solve,
                                                   int max_rounds = 20);

}  // namespace quant::tasks
