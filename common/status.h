// Status helpers shared by every component: the expected-failure channel (STYLE.md 3).
#pragma once

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define QUANT_CONCAT_INNER_(a, b) a##b
#define QUANT_CONCAT_(a, b) QUANT_CONCAT_INNER_(a, b)

// Returns the status from the enclosing function when `expr` is not OK.
#define RETURN_IF_ERROR(expr)                            \
  do {                                                   \
    ::absl::Status quant_status_ = (expr);               \
    if (!quant_status_.ok()) return quant_status_;       \
  } while (0)

// ASSIGN_OR_RETURN(auto x, MakeX()); declares x or returns the error.
#define ASSIGN_OR_RETURN(lhs, rexpr) \
  ASSIGN_OR_RETURN_IMPL_(QUANT_CONCAT_(quant_statusor_, __LINE__), lhs, rexpr)
#define ASSIGN_OR_RETURN_IMPL_(tmp, lhs, rexpr) \
  auto tmp = (rexpr);                           \
  if (!tmp.ok()) return std::move(tmp).status(); \
  lhs = std::move(tmp).value()

// Invariants of our own code: a failure is a bug, not bad input.
#define QUANT_CHECK(cond)                                                        \
  do {                                                                           \
    if (!(cond)) {                                                               \
      ::quant::internal::CheckFailed(__FILE__, __LINE__, #cond);                 \
    }                                                                            \
  } while (0)

namespace quant::internal {
[[noreturn]] void CheckFailed(const char* file, int line, const char* cond);
}  // namespace quant::internal
