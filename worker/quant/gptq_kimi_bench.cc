// GPTQ on one GPU's share of a Kimi-K2 MoE layer (issue 11): `experts` experts of gate/up
// 2048x7168 and down 7168x2048, each with its own Hessian (gate and up share theirs), weights
// and calibration tokens synthetic (H = 2 X^T X / n from `tokens` random rows), 3-bit symmetric,
// group 128, min/max grid (no MSE search), no act-order: the worker's GptqQuantizer::QuantizeBatch
// on CUDA tensors (Cholesky factors through ATen, the column blocks through
// kernels/gptq_block.cu, the trailing updates as batched GEMMs), one batch per projection.
// Floor, measured in the same run: the FLOPs of the inverse-Hessian factor (Cholesky, inverse
// from it, Cholesky again: 4/3 n^3, once per distinct Hessian) and of the trailing updates
// (rows x cols^2 per linear) at the fp32 GEMM rate of a 8192^3 at::matmul (TF32 off).
// Usage: gptq_kimi_bench [experts] [tokens]; one JSON line.
#include <ATen/ATen.h>
#include <cuda_runtime_api.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "worker/quant/gptq.h"

namespace {

double Seconds(const std::chrono::steady_clock::time_point& t0) {
  cudaDeviceSynchronize();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

int main(int argc, char** argv) {
  if (!at::hasCUDA()) {
    std::printf("gptq_kimi_bench: no CUDA: skipped\n");
    return 0;
  }
  const int64_t experts = argc > 1 ? std::atoll(argv[1]) : 48;
  const int64_t tokens = argc > 2 ? std::atoll(argv[2]) : 5461;
  const int64_t hidden = 7168, inter = 2048;
  const auto f32 = at::TensorOptions().dtype(at::kFloat).device(at::kCUDA);
  at::manual_seed(1);
  // Hessians from random tokens (SPD with a realistic spectrum), one per expert and input width.
  std::vector<at::Tensor> h_in, h_down, w_gate, w_up, w_down;
  for (int64_t e = 0; e < experts; ++e) {
    at::Tensor x = at::randn({tokens, hidden}, f32);
    h_in.push_back(at::matmul(x.t(), x) * (2.0 / tokens));
    at::Tensor xd = at::randn({tokens, inter}, f32);
    h_down.push_back(at::matmul(xd.t(), xd) * (2.0 / tokens));
    w_gate.push_back(at::randn({inter, hidden}, f32) * 0.02);
    w_up.push_back(at::randn({inter, hidden}, f32) * 0.02);
    w_down.push_back(at::randn({hidden, inter}, f32) * 0.02);
  }
  quant::quant::GptqOptions options;
  options.mse_scale_search = false;
  quant::quant::QuantScheme scheme;
  scheme.bits = 3;
  scheme.group_size = 128;
  const quant::quant::GptqQuantizer gptq(options);
  // Warm-up on two experts (cuSOLVER and cuBLAS handles, kernel loads).
  (void)gptq.QuantizeBatch({w_down[0], w_down[1]}, {h_down[0], h_down[1]}, scheme);
  cudaDeviceSynchronize();
  size_t free0 = 0, total = 0;
  cudaMemGetInfo(&free0, &total);
  // gate and up of every expert in one batch sharing their expert's Hessian tensor (factored
  // once per expert), down in another.
  std::vector<at::Tensor> w_gate_up = w_gate, h_gate_up = h_in;
  w_gate_up.insert(w_gate_up.end(), w_up.begin(), w_up.end());
  h_gate_up.insert(h_gate_up.end(), h_in.begin(), h_in.end());
  double seconds[2] = {0, 0};
  const std::vector<at::Tensor>* ws[2] = {&w_gate_up, &w_down};
  const std::vector<at::Tensor>* hs[2] = {&h_gate_up, &h_down};
  size_t free_min = free0;
  for (int f = 0; f < 2; ++f) {
    const auto t0 = std::chrono::steady_clock::now();
    auto q = gptq.QuantizeBatch(*ws[f], *hs[f], scheme);
    seconds[f] = Seconds(t0);
    if (!q.ok()) {
      std::fprintf(stderr, "gptq_kimi_bench: %s\n", std::string(q.status().message()).c_str());
      return 1;
    }
    size_t free_now = 0;
    cudaMemGetInfo(&free_now, &total);
    free_min = std::min(free_min, free_now);
  }
  // Where gate+up's time goes: the factorization alone, as QuantizeBatch does it on the GPU.
  double factor_s = 0;
  {
    at::Tensor h = at::stack(h_in, 0);
    h.diagonal(0, 1, 2).add_(0.01 * h.diagonal(0, 1, 2).mean(1, true));
    const auto t0 = std::chrono::steady_clock::now();
    at::Tensor l = at::linalg_cholesky(h);
    at::Tensor hinv = at::linalg_cholesky(at::cholesky_inverse(l), /*upper=*/true);
    factor_s = Seconds(t0);
  }
  // fp32 GEMM rate, same run.
  at::Tensor a = at::randn({8192, 8192}, f32), b = at::randn({8192, 8192}, f32);
  (void)at::matmul(a, b);
  cudaDeviceSynchronize();
  const auto g0 = std::chrono::steady_clock::now();
  for (int i = 0; i < 5; ++i) (void)at::matmul(a, b);
  const double gemm_s = Seconds(g0) / 5;
  const double rate = 2.0 * 8192.0 * 8192.0 * 8192.0 / gemm_s;
  const double n1 = hidden, n2 = inter;
  const double factor_flops = experts * (4.0 / 3.0) * (n1 * n1 * n1 + n2 * n2 * n2);
  const double update_flops = experts * (2.0 * inter * hidden * hidden + hidden * inter * inter);
  const double floor_s = (factor_flops + update_flops) / rate;
  const double total_s = seconds[0] + seconds[1];
  std::printf(
      "{\"bench\":\"gptq_kimi\",\"experts\":%lld,\"tokens\":%lld,\"bits\":3,\"group\":128,"
      "\"gate_up_s\":%.3f,\"down_s\":%.3f,\"total_s\":%.3f,"
      "\"gate_up_factor_only_s\":%.3f,\"fp32_gemm_tflops\":%.1f,\"floor_factor_s\":%.3f,\"floor_update_s\":%.3f,"
      "\"floor_s\":%.3f,\"over_floor\":%.2f,\"gpu_used_gib_max_after_batch\":%.1f}\n",
      static_cast<long long>(experts), static_cast<long long>(tokens), seconds[0], seconds[1],
      total_s, factor_s, rate / 1e12, factor_flops / rate, update_flops / rate, floor_s,
      total_s / floor_s, (total - free_min) / 1073741824.0);
  return 0;
}
