#include "job/slq_expert_model.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <limits>
#include <optional>

#include "absl/strings/str_cat.h"

namespace quant::tasks {
namespace {

// The row's loss at `bits`; NaN when it is not a candidate of the row.
double LossAt(const SlqUnitTable& row, int bits) {
  for (size_t k = 0; k < row.bits.size(); ++k) {
    if (row.bits[k] == bits) return std::max(0.0, row.loss[k]);
  }
  return std::numeric_limits<double>::quiet_NaN();
}

// c(b) = T(b) / sum_e s_e(b): 1 where the tied probe is missing or the sum is not positive.
double ScaleOf(const std::vector<SlqUnitTable>& table, const ExpertGroup& g, int bits) {
  auto it = g.tied_loss.find(bits);
  if (it == g.tied_loss.end()) return 1.0;
  double sum = 0;
  for (size_t r : g.rows) sum += LossAt(table[r], bits);
  return std::isfinite(sum) && sum > 0 && it->second > 0 ? it->second / sum : 1.0;
}

double PowerSum(const std::vector<SlqUnitTable>& table, const ExpertGroup& g,
                const std::vector<int>& bits) {
  double sum = 0;
  for (size_t r : g.rows) sum += std::pow(LossAt(table[r], bits[r]), g.power);
  return sum;
}

// Least squares over the bitwidths of log T(b) - (1/r) log sum_e s_e(b)^r: r on a grid of 0.01
// (the fit is one-dimensional and cheap).
void FitPower(const std::vector<SlqUnitTable>& table, ExpertGroup& g) {
  std::vector<double> log_tied;
  std::vector<std::vector<double>> s;  // per usable bitwidth: the rows' losses
  for (const auto& [bits, tied] : g.tied_loss) {
    std::vector<double> at;
    double sum = 0;
    for (size_t r : g.rows) {
      at.push_back(LossAt(table[r], bits));
      sum += at.back();
    }
    if (!(tied > 0) || !std::isfinite(sum) || !(sum > 0)) continue;
    log_tied.push_back(std::log(tied));
    s.push_back(std::move(at));
  }
  g.power = 1.0;
  g.fit_rms_log = 0.0;
  if (s.empty()) return;
  double best = std::numeric_limits<double>::infinity();
  for (int step = 0; kMinPower + 0.01 * step <= kMaxPower + 1e-9; ++step) {
    const double r = kMinPower + 0.01 * step;
    double err = 0;
    for (size_t i = 0; i < s.size(); ++i) {
      double sum = 0;
      for (double x : s[i]) sum += std::pow(x, r);
      const double d = log_tied[i] - std::log(sum) / r;
      err += d * d;
    }
    if (err < best) {
      best = err;
      g.power = r;
      g.fit_rms_log = std::sqrt(err / static_cast<double>(s.size()));
    }
  }
}

std::vector<bool> Grouped(size_t rows, const std::vector<ExpertGroup>& groups) {
  std::vector<bool> in(rows, false);
  for (const ExpertGroup& g : groups) {
    for (size_t r : g.rows) in[r] = true;
  }
  return in;
}

}  // namespace

std::string TiedUnitOfExpert(const std::string& unit) {
  const std::string marker = ".mlp.experts.";
  const size_t at = unit.find(marker);
  if (at == std::string::npos) return "";
  size_t i = at + marker.size();
  const size_t digits = i;
  while (i < unit.size() && std::isdigit(static_cast<unsigned char>(unit[i]))) ++i;
  if (i == digits || i + 1 >= unit.size() || unit[i] != '.') return "";
  return unit.substr(0, digits) + unit.substr(i + 1);
}

absl::StatusOr<ExpertAggregation> ParseExpertAggregation(const std::string& name) {
  if (name == "sum") return ExpertAggregation::kSum;
  if (name == "scale" || name.empty()) return ExpertAggregation::kScale;
  if (name == "power") return ExpertAggregation::kPower;
  return absl::InvalidArgumentError(
      absl::StrCat("expert aggregation \"", name, "\": expected sum, scale or power"));
}

std::string ExpertAggregationName(ExpertAggregation a) {
  switch (a) {
    case ExpertAggregation::kSum:
      return "sum";
    case ExpertAggregation::kScale:
      return "scale";
    case ExpertAggregation::kPower:
      return "power";
  }
  return "?";
}

std::vector<ExpertGroup> GroupExperts(
    const std::vector<SlqUnitTable>& table,
    const std::map<std::string, std::map<int, double>>& tied_loss) {
  std::map<std::string, ExpertGroup> by_tied;
  for (size_t r = 0; r < table.size(); ++r) {
    const std::string tied = TiedUnitOfExpert(table[r].unit);
    if (tied.empty() || !tied_loss.count(tied)) continue;
    ExpertGroup& g = by_tied[tied];
    g.tied_unit = tied;
    g.tied_loss = tied_loss.at(tied);
    g.rows.push_back(r);
  }
  std::vector<ExpertGroup> groups;
  for (auto& [tied, g] : by_tied) {
    FitPower(table, g);
    groups.push_back(std::move(g));
  }
  return groups;
}

std::map<int, double> SumOverTied(const std::vector<SlqUnitTable>& table, const ExpertGroup& g) {
  std::map<int, double> ratio;
  for (const auto& [bits, tied] : g.tied_loss) {
    double sum = 0;
    for (size_t r : g.rows) sum += LossAt(table[r], bits);
    if (tied > 0 && std::isfinite(sum)) ratio[bits] = sum / tied;
  }
  return ratio;
}

double PredictedLoss(const std::vector<SlqUnitTable>& table, const std::vector<ExpertGroup>& groups,
                     ExpertAggregation model, const std::vector<int>& bits) {
  const std::vector<bool> grouped = Grouped(table.size(), groups);
  double total = 0;
  for (size_t r = 0; r < table.size(); ++r) {
    if (!grouped[r] || model == ExpertAggregation::kSum) total += LossAt(table[r], bits[r]);
  }
  if (model == ExpertAggregation::kSum) return total;
  for (const ExpertGroup& g : groups) {
    if (model == ExpertAggregation::kScale) {
      for (size_t r : g.rows) total += ScaleOf(table, g, bits[r]) * LossAt(table[r], bits[r]);
    } else {
      total += std::pow(PowerSum(table, g, bits), 1.0 / g.power);
    }
  }
  return total;
}

absl::StatusOr<SlqAllocation> SolveWithExpertModel(const std::vector<SlqUnitTable>& table,
                                                   const std::vector<ExpertGroup>& groups,
                                                   ExpertAggregation model, bool target,
                                                   double limit, const SlqSolveFn& solve,
                                                   int max_rounds) {
  if (model == ExpertAggregation::kSum || groups.empty()) return solve(table, target, limit);
  // kScale: each row's loss times its layer's c(b); also kPower's starting allocation.
  std::vector<SlqUnitTable> scaled = table;
  for (const ExpertGroup& g : groups) {
    for (size_t r : g.rows) {
      for (size_t k = 0; k < scaled[r].bits.size(); ++k) {
        scaled[r].loss[k] =
            ScaleOf(table, g, scaled[r].bits[k]) * LossAt(table[r], scaled[r].bits[k]);
      }
    }
  }
  absl::StatusOr<SlqAllocation> start = solve(scaled, target, limit);
  if (model == ExpertAggregation::kScale || !start.ok()) return start;

  // kPower by majorisation: at the current allocation, Phi(R) = R^(1/r) is replaced by its
  // tangent Phi(R0) + Phi'(R0) (R - R0), and R = sum_e s_e^r is separable over the experts.
  constexpr double kTinyR = 1e-300;  // keeps Phi' finite where a layer's loss is 0
  auto objective = [&](const SlqAllocation& a) {
    return target ? a.average_bits : PredictedLoss(table, groups, model, a.bits);
  };
  auto feasible = [&](const SlqAllocation& a) {
    return !target || PredictedLoss(table, groups, model, a.bits) <= limit * (1 + 1e-12);
  };
  std::optional<SlqAllocation> best;
  if (feasible(*start)) best = *start;
  SlqAllocation current = *start;
  for (int round = 0; round < max_rounds; ++round) {
    std::vector<SlqUnitTable> tangent = table;
    double offset = 0;  // sum over groups of Phi(R0) - Phi'(R0) R0: a constant of the tangent
    for (const ExpertGroup& g : groups) {
      const double r0 = std::max(PowerSum(table, g, current.bits), kTinyR);
      const double phi = std::pow(r0, 1.0 / g.power);
      const double slope = phi / (g.power * r0);
      offset += phi - slope * r0;
      for (size_t r : g.rows) {
        for (size_t k = 0; k < tangent[r].bits.size(); ++k) {
          tangent[r].loss[k] = slope * std::pow(LossAt(table[r], tangent[r].bits[k]), g.power);
        }
      }
    }
    absl::StatusOr<SlqAllocation> next = solve(tangent, target, target ? limit - offset : limit);
    if (!next.ok()) break;  // the tangent's limit out of reach: keep the best so far
    const bool same = next->bits == current.bits;
    if (feasible(*next) && (!best || objective(*next) < objective(*best))) best = *next;
    current = *next;
    if (same) break;
  }
  if (!best) {
    return absl::FailedPreconditionError(
        "SLQ solve (power expert model): no allocation meets the limit under the model");
  }
  return *best;
}

}  // namespace quant::tasks
