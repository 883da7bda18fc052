// The GSQ step for large expert shares (a Kimi-K2 layer's 48 experts per GPU): the same step as
// kernels/gsq_step_cuda.h, with the per-logit state in bf16 and the transcendentals on the
// hardware's approximate units, so that one step moves about half the bytes and a third of the
// instructions:
// - logits and Lion momentum stored bf16 ([levels][rows*cols], level-major, as GsqTensors), as the
//   reference code keeps them; the logit update is rounded stochastically (a counter-based hash of
//   element, level and step), so Lion's 2e-4 steps are not lost below a bf16 ulp as they are in
//   the reference's round-to-nearest; momentum rounds to nearest;
// - start codes uint8 (shift mode), soft weights written and weight gradients read in bf16 (the
//   tensor-core GEMMs' dtype);
// - the Gumbel noise from the same counter-based uniforms as the exact kernels, through __logf /
//   __expf (a short series where u is near 1 and __logf is not accurate), relative error ~1e-6
//   against the references' polynomials.
// Not bit-identical to the C++ references: gsq_step_bf16_test.cu checks them against the
// references within the tolerances that bf16 rounding and the approximations imply.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/gsq_math.h"
#include "kernels/gsq_step.h"

namespace quant::kernels {

struct GsqTensorsBf16 {
  int64_t rows = 0;
  int64_t cols = 0;
  int64_t group_size = 0;          // divides cols
  int levels = 0;                  // 4 (absolute levels, 2-bit) or 5 (shifts around base)
  int max_code = 0;                // 2^bits - 1
  __nv_bfloat16* logits = nullptr;    // [levels][rows*cols]
  __nv_bfloat16* momentum = nullptr;  // [levels][rows*cols]
  const uint8_t* base = nullptr;      // [rows*cols] start codes (levels == 5), else nullptr
  float offsets[5] = {};              // host values: level values (4) or shifts (5)
  float* scales = nullptr;            // [rows*cols/group_size] fp32 (the fused step updates them)
  const float* zeros = nullptr;       // [rows*cols/group_size]
};

// w_out = scale * (E_soft[v] - zero) - (subtract ? subtract : 0), bf16 [rows*cols]. `subtract`
// (optional) turns the soft weight into its difference from the original (layer-local objective).
cudaError_t GsqForwardBf16(const GsqTensorsBf16& t, const GsqStepParams& p, __nv_bfloat16* w_out,
                           const __nv_bfloat16* subtract, cudaStream_t stream);

// Replays the noise, applies Lion to the logits in place (stochastic rounding) and writes the
// per-group scale gradient (fp32, fixed-order sums) into grad_scales.
cudaError_t GsqBackwardLionBf16(const GsqTensorsBf16& t, const GsqStepParams& p,
                                const __nv_bfloat16* grad_w, float* grad_scales,
                                cudaStream_t stream);

// One whole step's element-wise work after the GEMMs, fused: backward + Lion on the logits of
// step `p`, Lion on the scales (momentum in scale_momentum), then the soft weights of step `next`
// from the updated logits and scales into w_out (minus `subtract`, optional), so the next step
// needs no forward pass. The same results as GsqBackwardLionBf16, LionUpdateCuda on the scales
// and GsqForwardBf16(next), up to FMA contraction in the scale update. group_size <= 256.
cudaError_t GsqStepFusedBf16(const GsqTensorsBf16& t, const GsqStepParams& p,
                             const GsqStepParams& next, const __nv_bfloat16* grad_w,
                             float* scale_momentum, __nv_bfloat16* w_out,
                             const __nv_bfloat16* subtract, cudaStream_t stream);

// Final hard codes (argmax over valid levels; first maximum wins).
cudaError_t GsqHardCodesBf16(const GsqTensorsBf16& t, uint8_t* codes, cudaStream_t stream);

// Stochastic rounding of x to bf16 for (key, element): 16 hashed bits added below the bf16
// mantissa, then truncated, so |x| rounds up with probability equal to its distance from the
// bf16 value below (unbiased). Returns the bf16 bit pattern.
QUANT_HD uint16_t StochasticRoundBf16Bits(float x, uint32_t key, uint32_t element) {
  const uint32_t r = gsq_math::Mix32(element ^ key) & 0xffffu;
  return static_cast<uint16_t>((gsq_math::BitCast<uint32_t>(x) + r) >> 16);
}

}  // namespace quant::kernels
