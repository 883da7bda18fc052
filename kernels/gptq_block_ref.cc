#include <cmath>

#include "kernels/gptq_block.h"

namespace quant::kernels {

void GptqBlock_ref(const GptqBlockArgs& a) {
  const int64_t n = a.count;
  for (int64_t m = 0; m < a.members; ++m) {
    const float* u = a.hinv + m * n * n;
    for (int64_t r = 0; r < a.rows; ++r) {
      const int64_t row = m * a.rows + r;
      float* w = a.w + row * n;
      const float* s = a.scales + row * a.groups;
      const float* z = a.zeros + row * a.groups;
      for (int64_t i = 0; i < n; ++i) {
        const int32_t g = a.group_of_col[i];
        const float e =
            a.w0 != nullptr
                ? GptqColumnFromOriginal(w[i], a.w0[row * n + i], s[g], z[g], a.maxq,
                                         &a.codes[row * n + i])
                : GptqColumn(w[i], s[g], z[g], a.maxq, u[i * n + i], &a.codes[row * n + i]);
        a.err[row * n + i] = e;
        for (int64_t j = i + 1; j < n; ++j) w[j] -= e * u[i * n + j];
      }
    }
  }
}

}  // namespace quant::kernels
