// GPTQ's sequential block step (DESIGN.md section 5), for every row of every member at once:
// within one block of up to 128 columns, quantize column i of each row with its group's scale
// and zero, spread the error over the block's later columns through the upper Cholesky factor of
// H^-1, and keep the scaled errors for the trailing update (a GEMM, done by the caller). Rows are
// independent, so the GPU gives each row a thread. Framework-free; gptq_block_ref.cc is the
// reference and the CPU path, gptq_block.cu the CUDA version.
#pragma once

#include <cmath>
#include <cstdint>

#include "kernels/gsq_math.h"  // QUANT_HD

namespace quant::kernels {

struct GptqBlockArgs {
  int64_t members = 0;   // batch (experts of one projection)
  int64_t rows = 0;      // rows per member
  int64_t count = 0;     // columns in this block, <= kGptqMaxBlock
  int64_t groups = 0;    // groups the block's columns fall in
  int maxq = 0;          // 2^bits - 1
  const int32_t* group_of_col = nullptr;  // [count]: index into the last dim of scales/zeros
  const float* hinv = nullptr;    // [members, count, count]: the block of U, H^-1 = U^T U
  const float* scales = nullptr;  // [members, rows, groups]
  const float* zeros = nullptr;   // [members, rows, groups]
  float* w = nullptr;             // [members, rows, count]: the block's weights, updated in place
  uint8_t* codes = nullptr;       // [members, rows, count]
  float* err = nullptr;           // [members, rows, count]: (w - dequant(q)) / U_ii, or w0 - ..
  // Set: hinv holds V from one Cholesky of the flipped Hessian (worker/quant/gptq.cc) and the
  // error each column spreads is w0 - dequant(q), w0 the weights before any GPTQ update
  // ([members, rows, count]); V's diagonal is not read.
  const float* w0 = nullptr;
  // Row strides in elements (0: count), so that the caller can pass views of wider matrices (the
  // block's columns of W, of the weights before any update, of a span's errors) with no copy.
  int64_t ld_w = 0, ld_w0 = 0, ld_err = 0, ld_codes = 0;
};

inline constexpr int64_t kGptqMaxBlock = 128;

void GptqBlock_ref(const GptqBlockArgs& a);

// Column i of one row: its code, and the scaled error (w - dequant(q)) / u_ii that the block's
// later columns absorb. Shared by the reference and the CUDA kernel (same rounding).
QUANT_HD float GptqColumn(float w, float scale, float zero, int maxq, float u_ii, uint8_t* code) {
  float q = rintf(w / scale) + zero;  // round half to even, as torch.round
  q = q < 0.0f ? 0.0f : q;
  q = q > static_cast<float>(maxq) ? static_cast<float>(maxq) : q;
  *code = static_cast<uint8_t>(q);
  return (w - scale * (q - zero)) / u_ii;
}

// Column i of one row for the one-Cholesky update matrix: the code from the current weight w,
// the error from the weight before any update, w0 (see GptqBlockArgs::w0).
QUANT_HD float GptqColumnFromOriginal(float w, float w0, float scale, float zero, int maxq,
                                      uint8_t* code) {
  float q = rintf(w / scale) + zero;
  q = q < 0.0f ? 0.0f : q;
  q = q > static_cast<float>(maxq) ? static_cast<float>(maxq) : q;
  *code = static_cast<uint8_t>(q);
  return w0 - scale * (q - zero);
}

}  // namespace quant::kernels
