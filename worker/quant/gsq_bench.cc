// GSQ step time on a synthetic MoE layer against its floors measured in the same run: the
// step's matmul FLOPs at the GEMM rate libtorch reaches here, and its element-wise bytes at the
// measured copy bandwidth. Usage: gsq_bench [experts hidden inter rows_per_expert bits steps]
#include <ATen/ATen.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>

#include "common/alloc.h"
#include "worker/quant/gptq.h"
#include "worker/quant/gsq.h"

using namespace quant::quant;
using Clock = std::chrono::steady_clock;

static double Seconds(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

int main(int argc, char** argv) {
  quant::KeepFreedMemory();
  const int experts = argc > 1 ? std::atoi(argv[1]) : 32;
  const int64_t hidden = argc > 2 ? std::atoll(argv[2]) : 256;
  const int64_t inter = argc > 3 ? std::atoll(argv[3]) : 64;
  const int64_t rows = argc > 4 ? std::atoll(argv[4]) : 512;
  const int bits = argc > 5 ? std::atoi(argv[5]) : 3;
  const int steps = argc > 6 ? std::atoi(argv[6]) : 20;
  at::manual_seed(0);
  QuantScheme scheme{bits, Grid::kSymmetric, 128};
  std::vector<GsqFamily> fams(3);
  const char* names[3] = {"gate_proj", "up_proj", "down_proj"};
  GsqExpertTokens tokens;
  GptqOptions fast;
  fast.mse_scale_search = false;
  for (int f = 0; f < 3; ++f) fams[f].name = names[f];
  for (int e = 0; e < experts; ++e) {
    at::Tensor wg = at::randn({inter, hidden}) * 0.05, wu = at::randn({inter, hidden}) * 0.05;
    at::Tensor wd = at::randn({hidden, inter}) * 0.05;
    at::Tensor x = at::randn({rows * 2, hidden});
    tokens.inputs.push_back(x);
    tokens.targets.push_back(
        at::matmul(at::silu(at::matmul(x, wg.t())) * at::matmul(x, wu.t()), wd.t()));
    const at::Tensor ws[3] = {wg, wu, wd};
    for (int f = 0; f < 3; ++f) {
      fams[f].init.push_back(*RtnQuantizer().Quantize(ws[f], scheme, UnitContext{}));
      fams[f].original.push_back(ws[f]);
    }
  }
  // rows_per_expert = batch_tokens * (routed / layer_tokens) / E = rows.
  tokens.layer_tokens = rows * 2 * experts;
  GsqOptions o;
  o.batch_tokens = rows * experts;
  o.steps = 1;
  (void)RunGsq(fams, &tokens, scheme, o);  // warm-up and setup cost
  const auto t1 = Clock::now();
  (void)RunGsq(fams, &tokens, scheme, o);
  const double one = Seconds(t1);
  o.steps = steps + 1;
  const auto t2 = Clock::now();
  (void)RunGsq(fams, &tokens, scheme, o);
  const double step_s = (Seconds(t2) - one) / steps;

  // Floors measured now: fp32 GEMM rate on the step's own shapes, copy bandwidth.
  at::Tensor a = at::randn({experts, rows, hidden}), b = at::randn({experts, hidden, inter});
  for (int i = 0; i < 2; ++i) at::bmm(a, b);
  const auto t3 = Clock::now();
  const int reps = 10;
  for (int i = 0; i < reps; ++i) at::bmm(a, b);
  const double gemm_flops = 2.0 * experts * rows * hidden * inter * reps / Seconds(t3);
  at::Tensor src = at::randn({64 << 20 >> 2}), dst = at::empty_like(src);
  dst.copy_(src);
  const auto t4 = Clock::now();
  for (int i = 0; i < reps; ++i) dst.copy_(src);
  const double copy_bps = 2.0 * src.numel() * 4 * reps / Seconds(t4);
  // 3 projections x (forward 1 + backward 2) GEMMs of 2*rows*hidden*inter FLOPs per expert.
  const double step_flops = 9.0 * 2.0 * experts * rows * hidden * inter;
  const double weights = 3.0 * experts * hidden * inter;
  const int levels = bits == 2 ? 4 : 5;
  // Per weight: read logits + momentum (K floats each) twice-ish, write them once, w and dW.
  const double step_bytes = weights * (levels * 4.0 * 4 + 4 * 4);
  const double floor_s = step_flops / gemm_flops + step_bytes / copy_bps;
  std::printf(
      "{\"experts\": %d, \"hidden\": %lld, \"inter\": %lld, \"rows_per_expert\": %lld, \"bits\": "
      "%d, \"step_ms\": %.2f, \"gemm_gflops\": %.1f, \"copy_gbps\": %.1f, \"floor_ms\": %.2f, "
      "\"matmul_floor_ms\": %.2f, \"elementwise_floor_ms\": %.2f, \"step_over_floor\": %.2f}\n",
      experts, static_cast<long long>(hidden), static_cast<long long>(inter),
      static_cast<long long>(rows), bits, step_s * 1e3, gemm_flops / 1e9, copy_bps / 1e9,
      floor_s * 1e3, step_flops / gemm_flops * 1e3, step_bytes / copy_bps * 1e3,
      step_s / floor_s);
  return 0;
}
