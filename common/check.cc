// The one definition of QUANT_CHECK's failure path.
#include <cstdio>
#include <cstdlib>

#include "common/status.h"

namespace quant::internal {
void CheckFailed(const char* file, int line, const char* cond) {
  std::fprintf(stderr, "CHECK failed at %s:%d: %s\n", file, line, cond);
  std::abort();
}
}  // namespace quant::internal
