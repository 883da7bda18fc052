#include <cmath>

#include "kernels/gptq_block.h"

namespace quant::kernels {

void GptqBlock_ref(const GptqBlockArgs& a) {
  const int64_t n = a.count;
  const int64_t ld_w = a.ld_w > 0 ? a.ld_w : n, ld_w0 = a.ld_w0 > 0 ? a.ld_w0 : n;
  const int64_t ld_err = a.ld_err > 0 ? a.ld_err : n, ld_codes = a.ld_codes > 0 ? a.ld_codes : n;
  for (int64_t m = 0; m < a.members; ++m) {
    const float* u = a.hinv + m * n * n;
    for (int64_t r = 0; r < a.rows; ++r) {
      const int64_t row = m * a.rows + r;
      float* w = a.w + row * ld_w;
      const float* s = a.scales + row * a.groups;
      const float* z = a.zeros + row * a.groups;
      uint8_t* codes = a.codes + row * ld_codes;
      for (int64_t i = 0; i < n; ++i) {
        const int32_t g = a.group_of_col[i];
        const float e =
            a.w0 != nullptr
                ? GptqColumnFromOriginal(w[i], a.w0[row * ld_w0 + i], s[g], z[g], a.maxq,
                                         &codes[i])
                : GptqColumn(w[i], s[g], z[g], a.maxq, u[i * n + i], &codes[i]);
        a.err[row * ld_err + i] = e;
        for (int64_t j = i + 1; j < n; ++j) w[j] -= e * u[i * n + j];
      }
    }
  }
}

}  // namespace quant::kernels
