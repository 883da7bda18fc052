// CUDA versions of the GSQ step kernels of kernels/gsq_step.h. Same tensors (all pointers in
// GsqTensors are device pointers), same noise (kernels/gsq_math.h), same results as the C++
// references up to the order of the per-group scale-gradient sum: built with --fmad=false, the
// element-wise math rounds exactly as the references do. The GPU replays the noise in backward,
// so prob_cache is ignored and no per-logit state beyond logits and momentum is kept.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/gsq_step.h"

namespace quant::kernels {

cudaError_t GsqForwardCuda(const GsqTensors& t, const GsqStepParams& p, float* w_out,
                           cudaStream_t stream);

// Backward with Lion on the logits, and the scale gradient per group into grad_scales.
cudaError_t GsqBackwardLionCuda(const GsqTensors& t, const GsqStepParams& p, const float* grad_w,
                                float* grad_scales, cudaStream_t stream);

cudaError_t LionUpdateCuda(float* param, float* momentum, const float* grad, int64_t n, float lr,
                           float weight_decay, float beta1, float beta2, cudaStream_t stream);

cudaError_t GsqHardCodesCuda(const GsqTensors& t, uint8_t* codes, cudaStream_t stream);

}  // namespace quant::kernels
