// GSQ on one GPU's share of a Kimi-K2 MoE layer (issue 11): `experts` experts of gate/up
// 2048x7168 and down 7168x2048, group 128, weights and routed tokens synthetic. One whole step:
// the bf16-state GSQ kernels (kernels/gsq_step_bf16.h) for the soft weights and the fused
// backward + Lion, cuBLAS bf16 GEMMs (fp32 accumulation) for the expert forward and backward
// (expert-output objective) or for 2 dW H (layer-local objective), Lion on the scales.
// The soft weights are overwritten by their gradients (each expert's slice once its last reader
// has run), so the step holds one bf16 copy of the weights.
//
// Measured in the same run: the step (median of timed steps, per phase), peak GPU memory, and the
// floors: the bf16 GEMM rate (a 8192^3 cuBLAS GEMM) and the copy bandwidth (cudaMemcpy D2D).
// floor = the step's GEMM FLOPs / GEMM rate + its minimum element-wise bytes / copy bandwidth.
// Output: one JSON line.
//
// Usage: gsq_kimi_bench [--experts 48] [--tokens 5461] [--bits 2|3]
//                       [--objective expert-output|layer-local] [--steps 10]
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "kernels/cuda_test_util.h"
#include "kernels/gsq_math.h"
#include "kernels/gsq_step_bf16.h"
#include "kernels/gsq_step_cuda.h"

using namespace quant::kernels;

#define CHECK_CUBLAS(x)                                                        \
  do {                                                                         \
    cublasStatus_t st_ = (x);                                                  \
    if (st_ != CUBLAS_STATUS_SUCCESS) {                                        \
      std::fprintf(stderr, "%s:%d: %s: cuBLAS status %d\n", __FILE__, __LINE__, #x, \
                   static_cast<int>(st_));                                     \
      std::exit(2);                                                            \
    }                                                                          \
  } while (0)

namespace {

constexpr int64_t kHidden = 7168, kInter = 2048, kGroup = 128;
using bf16 = __nv_bfloat16;

cublasHandle_t g_blas;

// Row-major C[M,N] = alpha op(A) op(B) + beta C; A is [M,K] (or [K,M] if ta), B is [K,N] (or
// [N,K] if tb). cuBLAS is column-major, so it computes C^T = op(B)^T op(A)^T.
void Gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const bf16* a, int64_t lda,
          const bf16* b, int64_t ldb, bf16* c, int64_t ldc, float alpha = 1.0f,
          float beta = 0.0f) {
  CHECK_CUBLAS(cublasGemmEx(g_blas, tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N,
                            static_cast<int>(n), static_cast<int>(m), static_cast<int>(k), &alpha,
                            b, CUDA_R_16BF, static_cast<int>(ldb), a, CUDA_R_16BF,
                            static_cast<int>(lda), &beta, c, CUDA_R_16BF, static_cast<int>(ldc),
                            CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

// Synthetic contents: uniform in [-amp, amp) from a counter hash (never time on zeros).
__global__ void FillBf16(bf16* p, int64_t n, float amp, uint32_t seed) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const uint32_t h = gsq_math::Mix32(static_cast<uint32_t>(i) ^ gsq_math::Mix32(seed ^ (i >> 32)));
    p[i] = __float2bfloat16_rn(amp * (2.0f * (h >> 8) * (1.0f / 16777216.0f) - 1.0f));
  }
}

__global__ void FillU8(uint8_t* p, int64_t n, int max_code, uint32_t seed) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    p[i] = static_cast<uint8_t>(gsq_math::Mix32(static_cast<uint32_t>(i) ^ seed) % (max_code + 1));
  }
}

__global__ void FillF32(float* p, int64_t n, float value) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    p[i] = value;
  }
}

unsigned GridFor(int64_t n) {
  return static_cast<unsigned>(std::min<int64_t>((n + 255) / 256, 4096));
}

// gu is [T, 2 inter]: each row the gate pre-activation then the up one (one GEMM against the
// expert's stacked [gate; up] weights). h = silu(gate) * up, [T, inter].
__global__ void SwiGlu(const bf16* __restrict__ gu, bf16* __restrict__ h, int64_t rows,
                       int64_t inter) {
  const int64_t n = rows * inter;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = i / inter, c = i - r * inter;
    const float x = __bfloat162float(gu[r * 2 * inter + c]);
    const float s = x / (1.0f + __expf(-x));
    h[i] = __float2bfloat16_rn(s * __bfloat162float(gu[r * 2 * inter + inter + c]));
  }
}

// From dh [T, inter]: d(gate) and d(up) in place of gu.
__global__ void SwiGluBackward(const bf16* __restrict__ dh, bf16* __restrict__ gu, int64_t rows,
                               int64_t inter) {
  const int64_t n = rows * inter;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = i / inter, c = i - r * inter;
    bf16* g = gu + r * 2 * inter + c;
    bf16* u = g + inter;
    const float x = __bfloat162float(*g), up = __bfloat162float(*u);
    const float d = __bfloat162float(dh[i]);
    const float sig = 1.0f / (1.0f + __expf(-x));
    *g = __float2bfloat16_rn(d * up * sig * (1.0f + x * (1.0f - sig)));
    *u = __float2bfloat16_rn(d * x * sig);
  }
}

struct Family {
  const char* name;
  int64_t out, in;  // per expert
  GsqTensorsBf16 t;
  bf16* w = nullptr;       // soft weights: [experts*out, in]
  bf16* grad = nullptr;    // dLoss/dW: aliases w (expert-output) or its own (layer-local)
  bf16* w0 = nullptr;      // original weights (layer-local objective)
  float* scales = nullptr;
  float* scale_m = nullptr;
  float* grad_scales = nullptr;
  float* zeros = nullptr;
  int64_t n() const { return t.rows * t.cols; }
};

struct Timer {
  cudaEvent_t a, b;
  Timer() {
    CHECK_CUDA(cudaEventCreate(&a));
    CHECK_CUDA(cudaEventCreate(&b));
  }
  template <typename Fn>
  float Median(int warmup, int reps, Fn&& fn) {
    for (int i = 0; i < warmup; ++i) fn();
    std::vector<float> ms;
    for (int i = 0; i < reps; ++i) {
      CHECK_CUDA(cudaEventRecord(a));
      fn();
      CHECK_CUDA(cudaEventRecord(b));
      CHECK_CUDA(cudaEventSynchronize(b));
      float x;
      CHECK_CUDA(cudaEventElapsedTime(&x, a, b));
      ms.push_back(x);
    }
    std::sort(ms.begin(), ms.end());
    return ms[ms.size() / 2];
  }
};

size_t g_allocated = 0;
template <typename T>
T* Alloc(int64_t count) {
  T* p = nullptr;
  CHECK_CUDA(cudaMalloc(&p, sizeof(T) * std::max<int64_t>(count, 1)));
  g_allocated += sizeof(T) * count;
  return p;
}

}  // namespace

int main(int argc, char** argv) {
  int experts = 48, bits = 2, steps = 10;
  int64_t tokens = 5461;  // 64 x 4096 tokens x top-8 / 384 experts: the reference's batch
  std::string objective = "expert-output";
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i], v = argv[i + 1];
    if (k == "--experts") experts = std::atoi(v.c_str());
    else if (k == "--tokens") tokens = std::atoll(v.c_str());
    else if (k == "--bits") bits = std::atoi(v.c_str());
    else if (k == "--steps") steps = std::atoi(v.c_str());
    else if (k == "--objective") objective = v;
    else {
      std::fprintf(stderr, "gsq_kimi_bench: unknown option %s\n", k.c_str());
      return 2;
    }
  }
  const bool layer_local = objective == "layer-local";
  if (!layer_local && objective != "expert-output") {
    std::fprintf(stderr, "gsq_kimi_bench: --objective must be expert-output or layer-local\n");
    return 2;
  }
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::printf("gsq_kimi_bench: no CUDA device: skipped\n");
    return 0;
  }
  cudaDeviceProp prop;
  CHECK_CUDA(cudaGetDeviceProperties(&prop, 0));
  size_t free0, total;
  CHECK_CUDA(cudaMemGetInfo(&free0, &total));
  CHECK_CUBLAS(cublasCreate(&g_blas));
  const int levels = bits == 2 ? 4 : 5;
  const int max_code = (1 << bits) - 1;

  // gate and up of an expert stacked as one [2 inter, hidden] block (one GEMM each way).
  Family fam[2] = {{"gate_up", 2 * kInter, kHidden, {}}, {"down", kHidden, kInter, {}}};
  uint32_t seed = 1;
  for (Family& f : fam) {
    GsqTensorsBf16& t = f.t;
    t.rows = experts * f.out;
    t.cols = f.in;
    t.group_size = kGroup;
    t.levels = levels;
    t.max_code = max_code;
    const int64_t n = t.rows * t.cols, groups = n / kGroup;
    t.logits = Alloc<bf16>(levels * n);
    t.momentum = Alloc<bf16>(levels * n);
    FillBf16<<<GridFor(levels * n), 256>>>(t.logits, levels * n, 0.05f, seed++);
    FillBf16<<<GridFor(levels * n), 256>>>(t.momentum, levels * n, 1e-4f, seed++);
    if (levels == 5) {
      uint8_t* base = Alloc<uint8_t>(n);
      FillU8<<<GridFor(n), 256>>>(base, n, max_code, seed++);
      t.base = base;
      for (int k = 0; k < 5; ++k) t.offsets[k] = static_cast<float>(k - 2);
    } else {
      for (int k = 0; k < 4; ++k) t.offsets[k] = static_cast<float>(k);
    }
    f.scales = Alloc<float>(groups);
    f.scale_m = Alloc<float>(groups);
    f.grad_scales = Alloc<float>(groups);
    f.zeros = Alloc<float>(groups);
    FillF32<<<GridFor(groups), 256>>>(f.scales, groups, 0.01f);
    FillF32<<<GridFor(groups), 256>>>(f.scale_m, groups, 0.0f);
    FillF32<<<GridFor(groups), 256>>>(f.zeros, groups, static_cast<float>(1 << (bits - 1)));
    t.scales = f.scales;
    t.zeros = f.zeros;
    f.w = Alloc<bf16>(n);
    f.grad = f.w;
    if (layer_local) {
      f.grad = Alloc<bf16>(n);
      f.w0 = Alloc<bf16>(n);
      FillBf16<<<GridFor(n), 256>>>(f.w0, n, 0.03f, seed++);
    }
  }
  // Routed tokens and full-precision expert outputs (expert-output), or per-expert Hessians
  // (layer-local: gate and up share one 7168^2, down has its own 2048^2).
  bf16 *x = nullptr, *y_ref = nullptr, *gu = nullptr, *h = nullptr, *dh = nullptr;
  bf16 *y = nullptr, *h_in = nullptr, *h_down = nullptr;
  const int64_t xn = experts * tokens * kHidden;
  if (!layer_local) {
    x = Alloc<bf16>(xn);
    y_ref = Alloc<bf16>(xn);
    FillBf16<<<GridFor(xn), 256>>>(x, xn, 1.0f, 91);
    FillBf16<<<GridFor(xn), 256>>>(y_ref, xn, 0.05f, 92);
    gu = Alloc<bf16>(tokens * 2 * kInter);
    h = Alloc<bf16>(tokens * kInter);
    dh = Alloc<bf16>(tokens * kInter);
    y = Alloc<bf16>(tokens * kHidden);
  } else {
    h_in = Alloc<bf16>(experts * kHidden * kHidden);
    h_down = Alloc<bf16>(experts * kInter * kInter);
    FillBf16<<<GridFor(experts * kHidden * kHidden), 256>>>(h_in, experts * kHidden * kHidden,
                                                            0.01f, 93);
    FillBf16<<<GridFor(experts * kInter * kInter), 256>>>(h_down, experts * kInter * kInter,
                                                          0.01f, 94);
  }
  CHECK_CUDA(cudaDeviceSynchronize());

  GsqStepParams p;
  p.seed = 7;
  auto anneal = [&](int s) {
    const float frac = (s % 640) / 639.0f;
    p.step = s;
    p.kappa = 100.0f + 400.0f * frac;
    p.tau = 2.0f - 1.95f * frac;
  };
  auto forward = [&] {
    for (Family& f : fam) CHECK_CUDA(GsqForwardBf16(f.t, p, f.w, f.w0, nullptr));
  };
  // The GEMMs and activation work of one step: leaves dLoss/dW in each family's grad.
  const float coef = 2.0f / static_cast<float>(tokens * kHidden);  // MSE mean per expert
  auto gemms = [&] {
    for (int e = 0; e < experts; ++e) {
      if (layer_local) {  // dW = 2 (W - W0) H; gate and up share H
        for (int fi = 0; fi < 2; ++fi) {
          Family& f = fam[fi];
          const bf16* hm = fi == 0 ? h_in + e * kHidden * kHidden : h_down + e * kInter * kInter;
          const int64_t off = e * f.out * f.in;
          Gemm(false, false, f.out, f.in, f.in, f.w + off, f.in, hm, f.in, f.grad + off, f.in,
               2.0f);
        }
        continue;
      }
      const bf16* xe = x + e * tokens * kHidden;
      bf16* wgu = fam[0].w + e * 2 * kInter * kHidden;
      bf16* wd = fam[1].w + e * kHidden * kInter;
      Gemm(false, true, tokens, 2 * kInter, kHidden, xe, kHidden, wgu, kHidden, gu, 2 * kInter);
      SwiGlu<<<GridFor(tokens * kInter), 256>>>(gu, h, tokens, kInter);
      // dy = coef (h Wd^T - y_ref) straight from the GEMM (beta on a copy of y_ref).
      CHECK_CUDA(cudaMemcpyAsync(y, y_ref + e * tokens * kHidden, sizeof(bf16) * tokens * kHidden,
                                 cudaMemcpyDeviceToDevice));
      Gemm(false, true, tokens, kHidden, kInter, h, kInter, wd, kInter, y, kHidden, coef, -coef);
      Gemm(false, false, tokens, kInter, kHidden, y, kHidden, wd, kInter, dh, kInter);  // dh
      Gemm(true, false, kHidden, kInter, tokens, y, kHidden, h, kInter, wd, kInter);    // dWd
      SwiGluBackward<<<GridFor(tokens * kInter), 256>>>(dh, gu, tokens, kInter);
      Gemm(true, false, 2 * kInter, kHidden, tokens, gu, 2 * kInter, xe, kHidden, wgu,
           kHidden);  // d[Wg; Wu]
    }
  };
  auto backward = [&] {
    for (Family& f : fam) {
      CHECK_CUDA(GsqBackwardLionBf16(f.t, p, f.grad, f.grad_scales, nullptr));
      CHECK_CUDA(LionUpdateCuda(f.scales, f.scale_m, f.grad_scales, f.n() / kGroup, p.lr_scales,
                                0.0f, p.beta1, p.beta2, nullptr));
    }
  };
  // Fused: backward + Lion of step p, then the soft weights of step `next` (no forward pass).
  GsqStepParams next = p;
  auto fused = [&] {
    for (Family& f : fam) {
      CHECK_CUDA(GsqStepFusedBf16(f.t, p, next, f.grad, f.scale_m, f.w, f.w0, nullptr));
    }
  };

  // Timed steps, each phase between events: first the separate passes (forward, GEMMs,
  // backward + Lion), then the fused element-wise pass (GEMMs, backward + Lion + next forward).
  cudaEvent_t ev[4];
  for (cudaEvent_t& e : ev) CHECK_CUDA(cudaEventCreate(&e));
  std::vector<float> t_fwd, t_gemm, t_bwd, t_step, t_fgemm, t_fused, t_fstep;
  const int warmup = 2;
  for (int s = 0; s < warmup + steps; ++s) {
    anneal(s * 64);  // spread the timed steps over the schedule
    CHECK_CUDA(cudaEventRecord(ev[0]));
    forward();
    CHECK_CUDA(cudaEventRecord(ev[1]));
    gemms();
    CHECK_CUDA(cudaEventRecord(ev[2]));
    backward();
    CHECK_CUDA(cudaEventRecord(ev[3]));
    CHECK_CUDA(cudaEventSynchronize(ev[3]));
    if (s < warmup) continue;
    float a, b, c;
    CHECK_CUDA(cudaEventElapsedTime(&a, ev[0], ev[1]));
    CHECK_CUDA(cudaEventElapsedTime(&b, ev[1], ev[2]));
    CHECK_CUDA(cudaEventElapsedTime(&c, ev[2], ev[3]));
    t_fwd.push_back(a);
    t_gemm.push_back(b);
    t_bwd.push_back(c);
    t_step.push_back(a + b + c);
  }
  anneal(0);
  forward();  // the first step's soft weights; every later step gets them from the fused pass
  for (int s = 0; s < warmup + steps; ++s) {
    anneal(s * 64);
    next = p;
    const float frac = ((s + 1) * 64 % 640) / 639.0f;
    next.step = (s + 1) * 64;
    next.kappa = 100.0f + 400.0f * frac;
    next.tau = 2.0f - 1.95f * frac;
    CHECK_CUDA(cudaEventRecord(ev[0]));
    gemms();
    CHECK_CUDA(cudaEventRecord(ev[1]));
    fused();
    CHECK_CUDA(cudaEventRecord(ev[2]));
    CHECK_CUDA(cudaEventSynchronize(ev[2]));
    if (s < warmup) continue;
    float a, b;
    CHECK_CUDA(cudaEventElapsedTime(&a, ev[0], ev[1]));
    CHECK_CUDA(cudaEventElapsedTime(&b, ev[1], ev[2]));
    t_fgemm.push_back(a);
    t_fused.push_back(b);
    t_fstep.push_back(a + b);
  }
  auto median = [](std::vector<float> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  };
  size_t free_step;
  CHECK_CUDA(cudaMemGetInfo(&free_step, &total));
  // Hard codes once (end of training), timed for the projection.
  uint8_t* codes = Alloc<uint8_t>(fam[0].n());
  Timer timer;
  const float hard_ms = timer.Median(1, 3, [&] {
    for (Family& f : fam) CHECK_CUDA(GsqHardCodesBf16(f.t, codes, nullptr));
  });

  // Floors, same run: the bf16 GEMM rate and the copy bandwidth.
  const int64_t sq = 8192;
  bf16* ga = Alloc<bf16>(sq * sq);
  bf16* gb = Alloc<bf16>(sq * sq);
  bf16* gc = Alloc<bf16>(sq * sq);
  FillBf16<<<GridFor(sq * sq), 256>>>(ga, sq * sq, 1.0f, 95);
  FillBf16<<<GridFor(sq * sq), 256>>>(gb, sq * sq, 1.0f, 96);
  const float gemm_ms =
      timer.Median(3, 10, [&] { Gemm(false, false, sq, sq, sq, ga, sq, gb, sq, gc, sq); });
  const double gemm_rate = 2.0 * sq * sq * sq / (gemm_ms * 1e-3);
  const size_t copy_bytes = sizeof(bf16) * levels * fam[0].n();
  const float copy_ms = timer.Median(2, 10, [&] {
    CHECK_CUDA(cudaMemcpyAsync(fam[0].t.logits, fam[0].t.momentum, copy_bytes,
                               cudaMemcpyDeviceToDevice));
  });
  const double copy_bw = 2.0 * copy_bytes / (copy_ms * 1e-3);  // read + write per second

  // The step's work.
  double weights = 0, gemm_flops = 0;
  for (const Family& f : fam) weights += static_cast<double>(f.n());
  if (layer_local) {
    gemm_flops = experts * 2.0 * (2.0 * kInter * kHidden * kHidden + 1.0 * kHidden * kInter * kInter);
    (void)dh;
  } else {
    gemm_flops = experts * 7.0 * 2.0 * tokens * kInter * kHidden;
  }
  // Minimum element-wise bytes: logits and momentum read and written once (bf16), start codes
  // read once, soft weight written and its gradient read once (plus W0 read, layer-local);
  // the activations' element-wise passes (SwiGLU, MSE gradient, SwiGLU backward).
  const double per_weight_min =
      4.0 * levels * 2 + (levels == 5 ? 1 : 0) + 2 + 2 + (layer_local ? 2 : 0);
  // What the separate passes move: forward also reads the logits and start codes once more.
  // The fused pass moves the minimum.
  const double per_weight_ours = per_weight_min + 2.0 * levels + (levels == 5 ? 1 : 0);
  // Activations (bf16): SwiGLU reads gate, up and writes h; the MSE gradient reads y_ref (the
  // GEMM writes dy); SwiGLU backward reads dh, gate, up and writes both gradients.
  const double act_bytes =
      layer_local ? 0.0 : experts * (2.0 * tokens * (3 * kInter + 1 * kHidden + 5 * kInter));
  const double floor_gemm_ms = gemm_flops / gemm_rate * 1e3;
  const double floor_ew_ms = (weights * per_weight_min + act_bytes) / copy_bw * 1e3;
  const double floor_ms = floor_gemm_ms + floor_ew_ms;
  const double step_ms = median(t_step), fused_step_ms = median(t_fstep);
  std::printf(
      "{\"bench\":\"gsq_kimi_step\",\"gpu\":\"%s\",\"experts\":%d,\"tokens_per_expert\":%lld,"
      "\"bits\":%d,\"objective\":\"%s\",\"weights\":%.0f,\"timed_steps\":%d,"
      "\"step_ms\":%.2f,\"forward_ms\":%.2f,\"gemm_ms\":%.2f,\"backward_lion_ms\":%.2f,"
      "\"fused_step_ms\":%.2f,\"fused_gemm_ms\":%.2f,\"fused_elementwise_ms\":%.2f,"
      "\"hard_codes_ms\":%.2f,\"projected_640_steps_s\":%.1f,"
      "\"gemm_tflops_measured\":%.1f,\"copy_gbps_measured\":%.0f,"
      "\"step_gemm_tflop\":%.2f,\"step_gemm_tflops_achieved\":%.1f,"
      "\"elementwise_gb_min\":%.2f,\"elementwise_gb_separate\":%.2f,"
      "\"floor_gemm_ms\":%.2f,\"floor_elementwise_ms\":%.2f,\"floor_ms\":%.2f,"
      "\"step_over_floor\":%.2f,\"fused_step_over_floor\":%.2f,\"allocated_gib\":%.2f,"
      "\"gpu_used_gib\":%.2f}\n",
      prop.name, experts, static_cast<long long>(tokens), bits, objective.c_str(), weights,
      steps, step_ms, median(t_fwd), median(t_gemm), median(t_bwd), fused_step_ms,
      median(t_fgemm), median(t_fused), hard_ms, (640 * fused_step_ms + hard_ms) * 1e-3,
      gemm_rate / 1e12, copy_bw / 1e9, gemm_flops / 1e12,
      gemm_flops / (median(t_fgemm) * 1e-3) / 1e12, (weights * per_weight_min + act_bytes) / 1e9,
      (weights * per_weight_ours + act_bytes) / 1e9, floor_gemm_ms, floor_ew_ms, floor_ms,
      step_ms / floor_ms, fused_step_ms / floor_ms,
      (g_allocated - 3.0 * sizeof(bf16) * sq * sq - fam[0].n()) / 1073741824.0,
      (free0 - free_step) / 1073741824.0);
  CHECK_CUBLAS(cublasDestroy(g_blas));
  return 0;
}
