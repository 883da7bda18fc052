// CUDA version of kernels/pack.h (device pointers): a thread per output word (pack) or per code
// (unpack); same bytes as Pack_ref / Unpack_ref.
#pragma once

#include <cuda_runtime_api.h>

#include "kernels/pack.h"

namespace quant::kernels {

cudaError_t PackCuda(const PackStreams& p, const uint8_t* codes, int32_t* words,
                     cudaStream_t stream);
cudaError_t UnpackCuda(const PackStreams& p, const int32_t* words, uint8_t* codes,
                       cudaStream_t stream);

}  // namespace quant::kernels
