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
        const float scale = s[a.group_of_col[i]], zero = z[a.group_of_col[i]];
        float q = rintf(w[i] / scale) + zero;  // round half to even, as torch.round
        q = q < 0.0f ? 0.0f : q;
        q = q > static_cast<float>(a.maxq) ? static_cast<float>(a.maxq) : q;
        a.codes[row * n + i] = static_cast<uint8_t>(q);
        const float e = (w[i] - scale * (q - zero)) / u[i * n + i];
        a.err[row * n + i] = e;
        for (int64_t j = i + 1; j < n; ++j) w[j] -= e * u[i * n + j];
      }
    }
  }
}

}  // namespace quant::kernels
