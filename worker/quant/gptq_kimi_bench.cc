// GPTQ on one GPU's share of a Kimi-K2 MoE layer (issue 11): `experts` experts of gate/up
// 2048x7168 and down 7168x2048, each with its own Hessian (gate and up share theirs), weights
// and calibration tokens synthetic (H = 2 X^T X / n from `tokens` random rows), 3-bit symmetric,
// group 128, min/max grid (no MSE search), no act-order: the worker's GptqQuantizer::QuantizeBatch
// on CUDA tensors (Cholesky factors through ATen, the column blocks through
// kernels/gptq_block.cu, the trailing updates as batched GEMMs), one batch per projection,
// under several GptqOptions (one JSON line each; the first is the previous default, whose codes
// and loss the others are compared with), then the factorizations and the block kernel alone.
// Floor, measured in the same run: the FLOPs of the factorization that the options run (one
// Cholesky of the flipped Hessian: 1/3 n^3; the reference's Cholesky, inverse, Cholesky:
// 4/3 n^3; once per distinct Hessian) and of the trailing updates (rows x cols^2 per linear) at
// the fp32 GEMM rate of a 8192^3 at::matmul (TF32 off). Each line after the first also gives its
// codes' agreement with the first's and the first's GPTQ loss tr(dW H dW^T) over its own.
// Usage: gptq_kimi_bench [experts] [tokens]; JSON lines.
#include <ATen/ATen.h>
#include <cuda_runtime_api.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "kernels/gptq_block_cuda.h"
#include "worker/quant/gptq.h"

namespace {

double Seconds(const std::chrono::steady_clock::time_point& t0) {
  cudaDeviceSynchronize();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

struct Config {
  const char* name;
  bool one_cholesky;
  bool per_matrix;
  int outer_block;
  int cholesky_block;  // 0: cuSOLVER on whole matrices
  int streams;
};

// tr(dW H dW^T) summed over members, dW = W - dequantized codes (group 128, symmetric zero).
double GptqLoss(const std::vector<quant::quant::QuantizedWeight>& q,
                const std::vector<at::Tensor>& w, const std::vector<at::Tensor>& h) {
  double sum = 0;
  for (size_t m = 0; m < q.size(); ++m) {
    const int64_t g = q[m].group_size;
    at::Tensor deq = (q[m].codes.to(at::kFloat) - q[m].zeros.to(at::kFloat).repeat_interleave(g, 1)) *
                     q[m].scales.repeat_interleave(g, 1);
    at::Tensor d = w[m] - deq;
    sum += (at::matmul(d, h[m]) * d).sum().item<double>();
  }
  return sum;
}

double SameCodes(const std::vector<quant::quant::QuantizedWeight>& a,
                 const std::vector<quant::quant::QuantizedWeight>& b) {
  double same = 0, total = 0;
  for (size_t m = 0; m < a.size(); ++m) {
    same += a[m].codes.eq(b[m].codes).sum().item<double>();
    total += static_cast<double>(a[m].codes.numel());
  }
  return same / total;
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
  quant::quant::QuantScheme scheme;
  scheme.bits = 3;
  scheme.group_size = 128;
  // fp32 GEMM rate, same run.
  double rate = 0;
  {
    at::Tensor a = at::randn({8192, 8192}, f32), b = at::randn({8192, 8192}, f32);
    (void)at::matmul(a, b);
    cudaDeviceSynchronize();
    const auto g0 = std::chrono::steady_clock::now();
    for (int i = 0; i < 5; ++i) (void)at::matmul(a, b);
    rate = 2.0 * 8192.0 * 8192.0 * 8192.0 / (Seconds(g0) / 5);
  }
  const double n1 = hidden, n2 = inter;
  const double cube = experts * (n1 * n1 * n1 + n2 * n2 * n2);
  const double update_flops = experts * (2.0 * inter * hidden * hidden + hidden * inter * inter);
  // gate and up of every expert in one batch sharing their expert's Hessian tensor (factored
  // once per expert), down in another.
  std::vector<at::Tensor> w_gate_up = w_gate, h_gate_up = h_in;
  w_gate_up.insert(w_gate_up.end(), w_up.begin(), w_up.end());
  h_gate_up.insert(h_gate_up.end(), h_in.begin(), h_in.end());
  const std::vector<at::Tensor>* ws[2] = {&w_gate_up, &w_down};
  const std::vector<at::Tensor>* hs[2] = {&h_gate_up, &h_down};
  // The previous default first (its codes are kept and compared with the others').
  const Config configs[] = {
      {"before: cuSOLVER potrf per matrix, spans of 1024", true, true, 1024, 0, 1},
      {"cuSOLVER potrf per matrix on 4 streams, spans of 1024", true, true, 1024, 0, 4},
      {"default: blocked reversed Cholesky 512 (leaf 128), spans of 1024", true, true, 1024, 512,
       1},
  };
  std::vector<quant::quant::QuantizedWeight> kept[2];
  for (const Config& c : configs) {
    quant::quant::GptqOptions options;
    options.mse_scale_search = false;
    options.cuda_one_cholesky = c.one_cholesky;
    options.cuda_cholesky_per_matrix = c.per_matrix;
    options.cuda_outer_block = c.outer_block;
    options.cuda_cholesky_block = c.cholesky_block;
    options.cuda_cholesky_streams = c.streams;
    const quant::quant::GptqQuantizer gptq(options);
    // Warm-up on two experts (cuSOLVER and cuBLAS handles, kernel loads).
    (void)gptq.QuantizeBatch({w_down[0], w_down[1]}, {h_down[0], h_down[1]}, scheme);
    cudaDeviceSynchronize();
    size_t free0 = 0, total = 0;
    cudaMemGetInfo(&free0, &total);
    size_t free_min = free0;
    double seconds[2] = {0, 0};
    std::vector<quant::quant::QuantizedWeight> q[2];
    for (int f = 0; f < 2; ++f) {
      const auto t0 = std::chrono::steady_clock::now();
      auto r = gptq.QuantizeBatch(*ws[f], *hs[f], scheme);
      seconds[f] = Seconds(t0);
      if (!r.ok()) {
        std::fprintf(stderr, "gptq_kimi_bench: %s\n", std::string(r.status().message()).c_str());
        return 1;
      }
      q[f] = std::move(*r);
      size_t free_now = 0;
      cudaMemGetInfo(&free_now, &total);
      free_min = std::min(free_min, free_now);
    }
    const double factor_flops = (c.one_cholesky ? 1.0 / 3.0 : 4.0 / 3.0) * cube;
    const double floor_s = (factor_flops + update_flops) / rate;
    const double old_floor_s = (4.0 / 3.0 * cube + update_flops) / rate;
    const double total_s = seconds[0] + seconds[1];
    std::string vs_kept = "";
    if (kept[0].empty()) {
      kept[0] = std::move(q[0]);
      kept[1] = std::move(q[1]);
    } else {
      char buf[256];
      std::snprintf(buf, sizeof(buf),
                    ",\"codes_same_as_first_gate_up\":%.4f,\"codes_same_as_first_down\":%.4f,"
                    "\"loss_first_over_this_gate_up\":%.5f,\"loss_first_over_this_down\":%.5f",
                    SameCodes(kept[0], q[0]), SameCodes(kept[1], q[1]),
                    GptqLoss(kept[0], w_gate_up, h_gate_up) / GptqLoss(q[0], w_gate_up, h_gate_up),
                    GptqLoss(kept[1], w_down, h_down) / GptqLoss(q[1], w_down, h_down));
      vs_kept = buf;
    }
    std::printf(
        "{\"bench\":\"gptq_kimi\",\"config\":\"%s\",\"experts\":%lld,\"tokens\":%lld,\"bits\":3,"
        "\"group\":128,\"gate_up_s\":%.3f,\"down_s\":%.3f,\"total_s\":%.3f,"
        "\"fp32_gemm_tflops\":%.1f,\"floor_factor_s\":%.3f,\"floor_update_s\":%.3f,"
        "\"floor_s\":%.3f,\"over_floor\":%.2f,\"old_floor_s\":%.3f,\"over_old_floor\":%.2f,"
        "\"gpu_used_gib_max_after_batch\":%.1f%s}\n",
        c.name, static_cast<long long>(experts), static_cast<long long>(tokens), seconds[0],
        seconds[1], total_s, rate / 1e12, factor_flops / rate, update_flops / rate, floor_s,
        total_s / floor_s, old_floor_s, total_s / old_floor_s,
        (total - free_min) / 1073741824.0, vs_kept.c_str());
    std::fflush(stdout);
  }
  kept[0].clear();
  kept[1].clear();
  // The factorizations alone on the 48 gate/up Hessians, as QuantizeBatch runs them: the flipped
  // Hessians through cuSOLVER's potrf one at a time and the blocked reversed Cholesky for several
  // block and leaf sizes; each timed on its second run.
  {
    at::Tensor h = at::stack(h_in, 0);
    h.diagonal(0, 1, 2).add_(0.01 * h.diagonal(0, 1, 2).mean(1, true));
    const double useful = experts * n1 * n1 * n1 / 3.0;
    struct Variant {
      int streams, block, leaf;
    };
    for (const Variant& v : {Variant{1, 0, 0}, Variant{0, 512, 128}, Variant{0, 512, 64}, Variant{0, 256, 64},
                             Variant{0, 1024, 128}, Variant{0, 1024, 256}}) {
      double s = 0;
      for (int rep = 0; rep < 2; ++rep) {
        at::Tensor a = h.clone();
        cudaDeviceSynchronize();
        const auto t0 = std::chrono::steady_clock::now();
        if (v.block > 0) {
          (void)quant::quant::ReversedCholeskyBlocked(a, v.block, v.leaf);
        } else {
          at::Tensor k = a.flip({1, 2});
          for (int64_t d = 0; d < k.size(0); ++d) (void)at::linalg_cholesky_ex(k.select(0, d));
        }
        s = Seconds(t0);
      }
      std::printf(
          "{\"bench\":\"gptq_kimi_factor_gate_up\",\"streams\":%d,\"block\":%d,\"leaf\":%d,"
          "\"s\":%.4f,\"useful_tflops\":%.1f}\n",
          v.streams, v.block, v.leaf, s, useful / s / 1e12);
      std::fflush(stdout);
    }
  }
  // The block kernel alone, on the gate+up (experts x 2 x 2048 rows) and down (experts x 7168)
  // shapes, times the blocks per batch (56 and 16).
  {
    double s[2];
    const int64_t rows[2] = {2 * inter, hidden}, blocks[2] = {hidden / 128, inter / 128};
    for (int f = 0; f < 2; ++f) {
      at::Tensor w = at::randn({experts, rows[f], 128}, f32) * 0.02;
      at::Tensor u = at::eye(128, f32).expand({experts, 128, 128}).contiguous() +
                     at::randn({experts, 128, 128}, f32).triu(1) * 0.01;
      at::Tensor sc = at::full({experts, rows[f], 1}, 0.01, f32);
      at::Tensor z = at::full({experts, rows[f], 1}, 4.0, f32);
      at::Tensor goc = at::zeros({128}, f32.dtype(at::kInt));
      at::Tensor codes = at::empty({experts, rows[f], 128}, f32.dtype(at::kByte));
      at::Tensor err = at::empty_like(w);
      quant::kernels::GptqBlockArgs a;
      a.members = experts;
      a.rows = rows[f];
      a.count = 128;
      a.groups = 1;
      a.maxq = 7;
      a.group_of_col = goc.data_ptr<int32_t>();
      a.hinv = u.data_ptr<float>();
      a.scales = sc.data_ptr<float>();
      a.zeros = z.data_ptr<float>();
      a.w = w.data_ptr<float>();
      a.codes = codes.data_ptr<uint8_t>();
      a.err = err.data_ptr<float>();
      (void)quant::kernels::GptqBlockCuda(a, nullptr);
      cudaDeviceSynchronize();
      const auto t0 = std::chrono::steady_clock::now();
      for (int i = 0; i < 5; ++i) (void)quant::kernels::GptqBlockCuda(a, nullptr);
      s[f] = Seconds(t0) / 5 * blocks[f];
      if (cudaGetLastError() != cudaSuccess) return 1;
    }
    std::printf("{\"bench\":\"gptq_kimi_block_kernel\",\"gate_up_s\":%.3f,\"down_s\":%.3f}\n", s[0],
                s[1]);
  }
  return 0;
}
