#include "job/slq_solver.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <queue>

#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace quant::slq {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

absl::Status Validate(const std::vector<Item>& items) {
  if (items.empty()) return absl::InvalidArgumentError("SLQ solve: no units");
  for (const Item& item : items) {
    if (item.params <= 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("SLQ solve: unit ", item.name, " has ", item.params, " parameters"));
    }
    if (item.options.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("SLQ solve: unit ", item.name,
                                                     " has no bitwidth options"));
    }
    for (const Option& o : item.options) {
      if (o.bits < 1 || o.bits > 32 || !std::isfinite(o.loss)) {
        return absl::InvalidArgumentError(absl::StrCat(
            "SLQ solve: unit ", item.name, " has an invalid option (bits ", o.bits, ", loss ",
            o.loss, ")"));
      }
    }
  }
  return absl::OkStatus();
}

int64_t Cost(const Item& item, int k) { return item.options[k].bits * item.params; }

Solution Finish(const std::vector<Item>& items, std::vector<int> choice) {
  Solution s;
  int64_t params = 0;
  for (size_t i = 0; i < items.size(); ++i) {
    s.loss += items[i].options[choice[i]].loss;
    s.bits += Cost(items[i], choice[i]);
    params += items[i].params;
  }
  s.average_bits = static_cast<double>(s.bits) / static_cast<double>(params);
  s.choice = std::move(choice);
  return s;
}

double Gap(double objective, double bound) {
  return std::max(0.0, objective - bound) / std::max(std::fabs(objective), 1e-300);
}

// ---- Exact: DP over the cost in units of the params' gcd -------------------------------------

struct DpTable {
  int64_t unit = 1;                  // gcd of the params
  int64_t capacity = 0;              // largest cost kept, in units
  std::vector<double> best;          // [capacity + 1]: least loss at exactly this cost
  std::vector<std::vector<int8_t>> from;  // per item, per cost: the option taken (-1: none)
};

int64_t DpCells(const std::vector<Item>& items, int64_t capacity_bits) {
  int64_t unit = 0;
  for (const Item& item : items) unit = std::gcd(unit, item.params);
  const int64_t capacity = capacity_bits / unit;
  int64_t options = 0;
  for (const Item& item : items) options += static_cast<int64_t>(item.options.size());
  // Overflow-safe product: both factors are bounded, but the product may not be.
  if (capacity > 0 && options > std::numeric_limits<int64_t>::max() / (capacity + 1)) {
    return std::numeric_limits<int64_t>::max();
  }
  return options * (capacity + 1);
}

DpTable RunDp(const std::vector<Item>& items, int64_t capacity_bits) {
  DpTable t;
  t.unit = 0;
  for (const Item& item : items) t.unit = std::gcd(t.unit, item.params);
  t.capacity = capacity_bits / t.unit;
  t.best.assign(t.capacity + 1, kInf);
  t.best[0] = 0.0;
  std::vector<double> next(t.capacity + 1);
  int64_t reach = 0;  // largest cost with a finite entry so far
  for (const Item& item : items) {
    std::vector<int8_t>& from = t.from.emplace_back(t.capacity + 1, int8_t{-1});
    std::fill(next.begin(), next.end(), kInf);
    int64_t new_reach = 0;
    for (size_t k = 0; k < item.options.size(); ++k) {
      const int64_t c = item.options[k].bits * (item.params / t.unit);
      const double loss = item.options[k].loss;
      const int64_t top = std::min(reach, t.capacity - c);
      for (int64_t j = 0; j <= top; ++j) {
        const double v = t.best[j] + loss;
        if (v < next[j + c]) {
          next[j + c] = v;
          from[j + c] = static_cast<int8_t>(k);
        }
      }
      if (top >= 0) new_reach = std::max(new_reach, top + c);
    }
    reach = new_reach;
    t.best.swap(next);
  }
  return t;
}

std::vector<int> Backtrack(const std::vector<Item>& items, const DpTable& t, int64_t cost) {
  std::vector<int> choice(items.size());
  for (size_t i = items.size(); i-- > 0;) {
    const int k = t.from[i][cost];
    choice[i] = k;
    cost -= items[i].options[k].bits * (items[i].params / t.unit);
  }
  return choice;
}

// ---- Lagrangian relaxation with greedy repair ------------------------------------------------
// Generic form: minimise sum a(i, k) subject to sum b(i, k) <= limit, with (a, b) = (loss, cost)
// for a budget and (cost, loss) for a target.

struct Relaxed {
  std::vector<int> choice;
  double a = 0.0, b = 0.0, dual = 0.0;  // dual: sum_i min_k (a + lambda b) - lambda limit
};

template <typename A, typename B>
Relaxed Relax(const std::vector<Item>& items, A a, B b, double lambda, double limit) {
  Relaxed r;
  r.choice.resize(items.size());
  double dual = 0.0;
  for (size_t i = 0; i < items.size(); ++i) {
    int best = 0;
    double best_v = kInf, best_b = kInf;
    for (size_t k = 0; k < items[i].options.size(); ++k) {
      const double bv = b(i, k);
      const double v = a(i, k) + lambda * bv;
      // Ties go to the smaller constraint use, so lambda's solution is as feasible as it gets.
      if (v < best_v || (v == best_v && bv < best_b)) {
        best = static_cast<int>(k);
        best_v = v;
        best_b = bv;
      }
    }
    r.choice[i] = best;
    r.a += a(i, best);
    r.b += best_b;
    dual += best_v;
  }
  r.dual = dual - lambda * limit;
  return r;
}

template <typename A, typename B>
absl::StatusOr<std::pair<std::vector<int>, double>> Lagrangian(const std::vector<Item>& items,
                                                                A a, B b, double limit) {
  // Slack for rounding in the sums: the constraint is met up to 1e-12 relative.
  const double tolerance = 1e-12 * std::max(1.0, std::fabs(limit));
  Relaxed lo = Relax(items, a, b, 0.0, limit);
  double bound = lo.dual;
  if (lo.b <= limit + tolerance) return std::make_pair(lo.choice, bound);  // unconstrained optimum
  double lambda_lo = 0.0, lambda_hi = 1.0;
  Relaxed hi = Relax(items, a, b, lambda_hi, limit);
  bound = std::max(bound, hi.dual);
  while (hi.b > limit + tolerance) {
    if (lambda_hi > 1e300) {
      return absl::InvalidArgumentError("SLQ solve: the constraint cannot be met");
    }
    lambda_lo = lambda_hi;
    lambda_hi *= 16.0;
    hi = Relax(items, a, b, lambda_hi, limit);
    bound = std::max(bound, hi.dual);
  }
  for (int it = 0; it < 100 && lambda_hi - lambda_lo > 1e-15 * lambda_hi; ++it) {
    const double mid = 0.5 * (lambda_lo + lambda_hi);
    Relaxed m = Relax(items, a, b, mid, limit);
    bound = std::max(bound, m.dual);
    if (m.b <= limit + tolerance) {
      lambda_hi = mid;
      hi = std::move(m);
    } else {
      lambda_lo = mid;
    }
  }
  // Greedy repair: spend the slack left by hi on the moves with the most objective gained per
  // unit of constraint, re-offering each item's next move after it changes.
  std::vector<int> choice = hi.choice;
  double slack = limit - hi.b;
  struct Move {
    double ratio;
    size_t item;
    int to;
    bool operator<(const Move& o) const { return ratio < o.ratio; }
  };
  auto best_move = [&](size_t i, std::priority_queue<Move>& heap) {
    const int cur = choice[i];
    Move m{-1.0, i, -1};
    for (size_t k = 0; k < items[i].options.size(); ++k) {
      const double da = a(i, cur) - a(i, k);  // objective gained
      const double db = b(i, k) - b(i, cur);  // constraint spent
      if (da <= 0.0 || db > slack + tolerance) continue;
      const double ratio = db <= 0.0 ? kInf : da / db;
      if (ratio > m.ratio) m = Move{ratio, i, static_cast<int>(k)};
    }
    if (m.to >= 0) heap.push(m);
  };
  std::priority_queue<Move> heap;
  for (size_t i = 0; i < items.size(); ++i) best_move(i, heap);
  while (!heap.empty()) {
    Move m = heap.top();
    heap.pop();
    const int cur = choice[m.item];
    const double db = b(m.item, m.to) - b(m.item, cur);
    if (a(m.item, m.to) >= a(m.item, cur) || db > slack + tolerance) {
      best_move(m.item, heap);  // stale: the item moved or the slack shrank
      continue;
    }
    choice[m.item] = m.to;
    slack -= db;
    best_move(m.item, heap);
  }
  return std::make_pair(std::move(choice), bound);
}

absl::StatusOr<Solution> Solve(const std::vector<Item>& items, bool budget, double limit,
                               const SolveOptions& options) {
  RETURN_IF_ERROR(Validate(items));
  int64_t params = 0, min_bits = 0, max_bits = 0;
  double min_loss = 0.0;
  for (const Item& item : items) {
    params += item.params;
    int64_t lo = std::numeric_limits<int64_t>::max(), hi = 0;
    double least = kInf;
    for (size_t k = 0; k < item.options.size(); ++k) {
      lo = std::min(lo, Cost(item, static_cast<int>(k)));
      hi = std::max(hi, Cost(item, static_cast<int>(k)));
      least = std::min(least, item.options[k].loss);
    }
    min_bits += lo;
    max_bits += hi;
    min_loss += least;
  }
  int64_t capacity = 0;
  if (budget) {
    const double total = limit * static_cast<double>(params);
    if (!(total >= static_cast<double>(min_bits))) {
      return absl::InvalidArgumentError(absl::StrCat(
          "SLQ solve: a budget of ", limit, " bits per parameter is below the smallest allocation (",
          static_cast<double>(min_bits) / static_cast<double>(params), ")"));
    }
    capacity = std::min<int64_t>(max_bits, static_cast<int64_t>(std::floor(total)));
  } else {
    if (min_loss > limit + 1e-12 * std::max(1.0, std::fabs(limit))) {
      return absl::InvalidArgumentError(absl::StrCat(
          "SLQ solve: the target needs a predicted loss <= ", limit,
          ", but the least the options reach is ", min_loss));
    }
    capacity = max_bits;
  }

  const bool exact = options.method == Method::kExact ||
                     (options.method == Method::kAuto &&
                      DpCells(items, capacity) <= options.max_dp_cells);
  if (exact) {
    for (const Item& item : items) {
      if (item.options.size() > 127) {
        return absl::InvalidArgumentError("SLQ solve: more than 127 options for one unit");
      }
    }
    DpTable t = RunDp(items, capacity);
    int64_t pick = -1;
    if (budget) {
      for (int64_t c = 0; c <= t.capacity; ++c) {
        if (t.best[c] < kInf && (pick < 0 || t.best[c] < t.best[pick])) pick = c;
      }
    } else {
      const double tolerance = 1e-12 * std::max(1.0, std::fabs(limit));
      for (int64_t c = 0; c <= t.capacity && pick < 0; ++c) {
        if (t.best[c] <= limit + tolerance) pick = c;
      }
    }
    if (pick < 0) return absl::InternalError("SLQ solve: no allocation found");
    Solution s = Finish(items, Backtrack(items, t, pick));
    s.lower_bound = budget ? s.loss : static_cast<double>(s.bits);
    s.exact = true;
    return s;
  }

  auto loss = [&](size_t i, size_t k) { return items[i].options[k].loss; };
  auto cost = [&](size_t i, size_t k) {
    return static_cast<double>(items[i].options[k].bits * items[i].params);
  };
  absl::StatusOr<std::pair<std::vector<int>, double>> r =
      budget ? Lagrangian(items, loss, cost, static_cast<double>(capacity))
             : Lagrangian(items, cost, loss, limit);
  if (!r.ok()) return r.status();
  Solution s = Finish(items, std::move(r->first));
  s.lower_bound = r->second;
  s.gap = Gap(budget ? s.loss : static_cast<double>(s.bits), s.lower_bound);
  return s;
}

}  // namespace

absl::StatusOr<Solution> SolveBudget(const std::vector<Item>& items, double average_bits,
                                     const SolveOptions& options) {
  return Solve(items, /*budget=*/true, average_bits, options);
}

absl::StatusOr<Solution> SolveTarget(const std::vector<Item>& items, double max_loss,
                                     const SolveOptions& options) {
  return Solve(items, /*budget=*/false, max_loss, options);
}

absl::StatusOr<tasks::SlqAllocation> SolveTables(const std::vector<tasks::SlqUnitTable>& table,
                                                 bool target, double limit) {
  std::vector<Item> items;
  for (const tasks::SlqUnitTable& row : table) {
    Item item{row.unit, row.params, {}};
    for (size_t k = 0; k < row.bits.size(); ++k) item.options.push_back({row.bits[k], row.loss[k]});
    items.push_back(std::move(item));
  }
  ASSIGN_OR_RETURN(const Solution s,
                   target ? SolveTarget(items, limit) : SolveBudget(items, limit));
  tasks::SlqAllocation a;
  for (size_t i = 0; i < items.size(); ++i) a.bits.push_back(items[i].options[s.choice[i]].bits);
  a.average_bits = s.average_bits;
  a.optimality_gap = s.gap;
  a.exact = s.exact;
  return a;
}

}  // namespace quant::slq
