// The GSQ step on the GPU: one warp per quantization group (its elements are contiguous), each
// lane a strided subset of the group's elements, the levels unrolled. Forward writes the expected
// weight; backward replays the same noise, forms the logit gradients in registers and applies
// Lion in place, and reduces the scale gradient over the group with a fixed shuffle tree (the
// same bits on every run). Built with --fmad=false so each element rounds as the C++ reference.
#include <cuda_runtime.h>

#include "kernels/gsq_math.h"
#include "kernels/gsq_step_cuda.h"

namespace quant::kernels {
namespace {

using namespace gsq_math;

constexpr int kWarpsPerBlock = 8;
constexpr int kMaxK = 5;

struct Args {
  int64_t n = 0;           // rows * cols
  int64_t groups = 0;
  int64_t group_size = 0;
  int levels = 0;
  float max_code = 0;
  float off[kMaxK] = {};
  uint32_t key[kMaxK] = {};
  float kappa_over_tau = 0, inv_tau = 0;
  uint32_t element_offset = 0;
};

Args MakeArgs(const GsqTensors& t, const GsqStepParams& p, const float* host_offsets) {
  Args a;
  a.n = t.rows * t.cols;
  a.group_size = t.group_size;
  a.groups = a.n / t.group_size;
  a.levels = t.levels;
  a.max_code = static_cast<float>(t.max_code);
  const uint32_t step_key = StepKey(p.seed, p.step);
  for (int k = 0; k < t.levels; ++k) {
    a.off[k] = host_offsets[k];
    a.key[k] = LevelKey(step_key, k);
  }
  a.kappa_over_tau = p.kappa / p.tau;
  a.inv_tau = 1.0f / p.tau;
  a.element_offset = static_cast<uint32_t>(p.element_offset);
  return a;
}

// The tempered softmax over the valid levels of element i, exactly as SoftBlock computes it.
template <int K>
__device__ __forceinline__ float Soft(const Args& a, const float* __restrict__ logits,
                                      const float* __restrict__ base, int64_t i, float (&prob)[K],
                                      float (&value)[K]) {
  const float b = base != nullptr ? base[i] : 0.0f;
  float amax = kMasked;
#pragma unroll
  for (int k = 0; k < K; ++k) {
    const float v = b + a.off[k];
    value[k] = v;
    const bool valid = (v >= 0.0f) & (v <= a.max_code);
    const float g = Gumbel(Uniform(a.key[k], static_cast<uint32_t>(i) + a.element_offset));
    const float x = valid ? logits[k * a.n + i] * a.kappa_over_tau + g * a.inv_tau : kMasked;
    prob[k] = x;
    amax = amax > x ? amax : x;
  }
  float sum = 0.0f;
#pragma unroll
  for (int k = 0; k < K; ++k) {
    const float x = prob[k];
    const float ex = FastExp(x - amax);
    prob[k] = x > 0.5f * kMasked ? ex : 0.0f;
    sum += prob[k];
  }
  const float inv = 1.0f / sum;
  float expected = 0.0f;
#pragma unroll
  for (int k = 0; k < K; ++k) {
    prob[k] *= inv;
    expected += prob[k] * value[k];
  }
  return expected;
}

template <int K>
__global__ void ForwardKernel(Args a, const float* __restrict__ logits,
                              const float* __restrict__ base, const float* __restrict__ scales,
                              const float* __restrict__ zeros, float* __restrict__ w_out) {
  const int lane = threadIdx.x & 31;
  const int64_t g = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + (threadIdx.x >> 5);
  if (g >= a.groups) return;
  const float scale = scales[g], zero = zeros[g];
  float prob[K], value[K];
  for (int64_t j = lane; j < a.group_size; j += 32) {
    const int64_t i = g * a.group_size + j;
    w_out[i] = scale * (Soft<K>(a, logits, base, i, prob, value) - zero);
  }
}

template <int K>
__global__ void BackwardKernel(Args a, float* __restrict__ logits, float* __restrict__ momentum,
                               const float* __restrict__ base, const float* __restrict__ scales,
                               const float* __restrict__ zeros, const float* __restrict__ grad_w,
                               float* __restrict__ grad_scales, float kappa, float tau,
                               float lr, float decay, float b1, float b2) {
  const int lane = threadIdx.x & 31;
  const int64_t g = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + (threadIdx.x >> 5);
  if (g >= a.groups) return;
  const float scale = scales[g], zero = zeros[g];
  const float de_coef = scale * kappa / tau;
  float prob[K], value[K];
  float gsum = 0.0f;
  for (int64_t j = lane; j < a.group_size; j += 32) {
    const int64_t i = g * a.group_size + j;
    const float expected = Soft<K>(a, logits, base, i, prob, value);
    const float gw = grad_w[i];
    gsum += gw * (expected - zero);
    const float de = gw * de_coef;
#pragma unroll
    for (int k = 0; k < K; ++k) {
      const float grad = prob[k] * (value[k] - expected) * de;
      const float m = momentum[k * a.n + i];
      const float update = Sign(b1 * m + (1.0f - b1) * grad);
      logits[k * a.n + i] = logits[k * a.n + i] * decay - lr * update;
      momentum[k * a.n + i] = b2 * m + (1.0f - b2) * grad;
    }
  }
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) {
    gsum += __shfl_down_sync(0xffffffffu, gsum, offset);
  }
  if (lane == 0) grad_scales[g] = gsum;
}

__global__ void LionKernel(float* __restrict__ param, float* __restrict__ momentum,
                           const float* __restrict__ grad, int64_t n, float lr, float decay,
                           float b1, float b2) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float m = momentum[i];
    const float update = Sign(b1 * m + (1.0f - b1) * grad[i]);
    param[i] = param[i] * decay - lr * update;
    momentum[i] = b2 * m + (1.0f - b2) * grad[i];
  }
}

template <int K>
__global__ void HardKernel(Args a, const float* __restrict__ logits,
                           const float* __restrict__ base, uint8_t* __restrict__ codes) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < a.n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float b = base != nullptr ? base[i] : 0.0f;
    float best = kMasked, code = 0.0f;
#pragma unroll
    for (int k = 0; k < K; ++k) {
      const float v = b + a.off[k];
      const bool valid = v >= 0.0f && v <= a.max_code;
      const float l = logits[k * a.n + i];
      if (valid && l > best) {  // first maximum wins, as torch.argmax
        best = l;
        code = v;
      }
    }
    codes[i] = static_cast<uint8_t>(code);
  }
}

bool Supported(const GsqTensors& t) {
  return t.group_size > 0 && (t.rows * t.cols) % t.group_size == 0 && t.cols % t.group_size == 0 &&
         t.rows * t.cols < (int64_t{1} << 32) &&
         ((t.levels == 4 && t.base == nullptr) || (t.levels == 5 && t.base != nullptr));
}

// The offsets live in device memory in GsqTensors; the kernels take them by value.
cudaError_t HostOffsets(const GsqTensors& t, float* out, cudaStream_t stream) {
  cudaError_t e = cudaMemcpyAsync(out, t.offsets, sizeof(float) * t.levels,
                                  cudaMemcpyDeviceToHost, stream);
  if (e != cudaSuccess) return e;
  return cudaStreamSynchronize(stream);
}

// The launch arguments of a GSQ kernel: checks the layout, reads the level offsets back.
cudaError_t Prepare(const GsqTensors& t, const GsqStepParams& p, cudaStream_t stream, Args* a) {
  if (!Supported(t)) return cudaErrorInvalidValue;
  float off[kMaxK];
  if (cudaError_t e = HostOffsets(t, off, stream); e != cudaSuccess) return e;
  *a = MakeArgs(t, p, off);
  return cudaSuccess;
}

unsigned Blocks(int64_t groups) {
  return static_cast<unsigned>((groups + kWarpsPerBlock - 1) / kWarpsPerBlock);
}

}  // namespace

cudaError_t GsqForwardCuda(const GsqTensors& t, const GsqStepParams& p, float* w_out,
                           cudaStream_t stream) {
  Args a;
  if (cudaError_t e = Prepare(t, p, stream, &a); e != cudaSuccess) return e;
  if (a.groups == 0) return cudaSuccess;
  const unsigned threads = 32 * kWarpsPerBlock;
  if (t.levels == 4) {
    ForwardKernel<4><<<Blocks(a.groups), threads, 0, stream>>>(a, t.logits, nullptr, t.scales,
                                                                 t.zeros, w_out);
  } else {
    ForwardKernel<5><<<Blocks(a.groups), threads, 0, stream>>>(a, t.logits, t.base, t.scales,
                                                                 t.zeros, w_out);
  }
  return cudaGetLastError();
}

cudaError_t GsqBackwardLionCuda(const GsqTensors& t, const GsqStepParams& p, const float* grad_w,
                                float* grad_scales, cudaStream_t stream) {
  Args a;
  if (cudaError_t e = Prepare(t, p, stream, &a); e != cudaSuccess) return e;
  if (a.groups == 0) return cudaSuccess;
  const unsigned threads = 32 * kWarpsPerBlock;
  const float decay = 1.0f - p.lr_logits * p.weight_decay;
  if (t.levels == 4) {
    BackwardKernel<4><<<Blocks(a.groups), threads, 0, stream>>>(
        a, t.logits, t.momentum, nullptr, t.scales, t.zeros, grad_w, grad_scales, p.kappa, p.tau,
        p.lr_logits, decay, p.beta1, p.beta2);
  } else {
    BackwardKernel<5><<<Blocks(a.groups), threads, 0, stream>>>(
        a, t.logits, t.momentum, t.base, t.scales, t.zeros, grad_w, grad_scales, p.kappa, p.tau,
        p.lr_logits, decay, p.beta1, p.beta2);
  }
  return cudaGetLastError();
}

cudaError_t LionUpdateCuda(float* param, float* momentum, const float* grad, int64_t n, float lr,
                           float weight_decay, float beta1, float beta2, cudaStream_t stream) {
  if (n <= 0) return cudaSuccess;
  const unsigned blocks = static_cast<unsigned>(std::min<int64_t>((n + 255) / 256, 65535));
  LionKernel<<<blocks, 256, 0, stream>>>(param, momentum, grad, n, lr, 1.0f - lr * weight_decay,
                                         beta1, beta2);
  return cudaGetLastError();
}

cudaError_t GsqHardCodesCuda(const GsqTensors& t, uint8_t* codes, cudaStream_t stream) {
  Args a;
  if (cudaError_t e = Prepare(t, GsqStepParams{}, stream, &a); e != cudaSuccess) return e;
  if (a.n == 0) return cudaSuccess;
  const unsigned blocks = static_cast<unsigned>(std::min<int64_t>((a.n + 255) / 256, 65535));
  if (t.levels == 4) {
    HardKernel<4><<<blocks, 256, 0, stream>>>(a, t.logits, nullptr, codes);
  } else {
    HardKernel<5><<<blocks, 256, 0, stream>>>(a, t.logits, t.base, codes);
  }
  return cudaGetLastError();
}

}  // namespace quant::kernels
