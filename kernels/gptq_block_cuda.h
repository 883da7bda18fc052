// CUDA version of kernels/gptq_block.h: all pointers are device pointers. Built with
// --fmad=false, it rounds as GptqBlock_ref does (bit-identical results).
#pragma once

#include <cuda_runtime_api.h>

#include "kernels/gptq_block.h"

namespace quant::kernels {

cudaError_t GptqBlockCuda(const GptqBlockArgs& a, cudaStream_t stream);

}  // namespace quant::kernels
