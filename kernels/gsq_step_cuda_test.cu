// GSQ step: the CUDA kernels against the C++ references on random inputs of several shapes
// (odd ones included), outputs poisoned before each run; and, with --bench, the kernels on a
// Kimi-K2 expert share against the copy-bandwidth floor measured in the same run.
// Exit 0 with "skipped" where no CUDA device is present.
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "kernels/cuda_test_util.h"
#include "kernels/gsq_step.h"
#include "kernels/gsq_step_cuda.h"

using namespace quant::kernels;

using namespace quant::kernels::testing;

struct Case {
  int64_t rows, cols, group;
  int bits;
};

// max |a - b| / max |b|, and whether every element of a was written (no NaN poison left).
double RelErr(const std::vector<float>& a, const std::vector<float>& b, bool* written) {
  double num = 0, den = 0;
  *written = true;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::isnan(a[i])) *written = false;
    num = std::max(num, std::fabs(static_cast<double>(a[i]) - b[i]));
    den = std::max(den, std::fabs(static_cast<double>(b[i])));
  }
  return den > 0 ? num / den : num;
}

bool RunCase(const Case& c, std::mt19937& rng) {
  const int64_t n = c.rows * c.cols, groups = n / c.group;
  const int levels = c.bits == 2 ? 4 : 5;
  const int max_code = (1 << c.bits) - 1;
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_int_distribution<int> code(0, max_code);
  std::vector<float> logits(levels * n), momentum(levels * n), base, offsets(levels);
  for (float& x : logits) x = 0.01f * normal(rng);
  for (float& x : momentum) x = 1e-4f * normal(rng);
  if (levels == 5) {
    base.resize(n);
    for (float& x : base) x = static_cast<float>(code(rng));
    for (int k = 0; k < 5; ++k) offsets[k] = static_cast<float>(k - 2);
  } else {
    for (int k = 0; k < 4; ++k) offsets[k] = static_cast<float>(k);
  }
  std::vector<float> scales(groups), scale_m(groups, 0.0f), zeros(groups), grad_w(n);
  for (float& s : scales) s = 0.01f * normal(rng);  // signed: negated scales occur (MSE search)
  for (float& z : zeros) z = static_cast<float>(1 << (c.bits - 1));
  for (float& g : grad_w) g = 1e-3f * normal(rng);
  GsqStepParams p;
  p.seed = rng();
  p.step = rng() % 640;
  p.kappa = 100.0f + 400.0f * (p.step / 639.0f);
  p.tau = 2.0f - 1.95f * (p.step / 639.0f);

  // CPU reference (replay path: no probability cache).
  std::vector<float> l_cpu = logits, m_cpu = momentum, w_cpu(n), gs_cpu(groups);
  GsqTensors t;
  t.rows = c.rows;
  t.cols = c.cols;
  t.group_size = c.group;
  t.levels = levels;
  t.max_code = max_code;
  t.logits = l_cpu.data();
  t.momentum = m_cpu.data();
  t.base = base.empty() ? nullptr : base.data();
  t.offsets = offsets.data();
  t.scales = scales.data();
  t.zeros = zeros.data();
  GsqForward_ref(t, p, w_cpu.data(), 0, c.rows);
  GsqBackwardLion_ref(t, p, grad_w.data(), gs_cpu.data(), 0, c.rows);
  std::vector<uint8_t> codes_cpu(n);
  GsqHardCodes_ref(t, codes_cpu.data(), 0, c.rows);

  // GPU.
  GsqTensors d = t;
  d.logits = ToDevice(logits);
  d.momentum = ToDevice(momentum);
  d.base = base.empty() ? nullptr : ToDevice(base);
  d.offsets = ToDevice(offsets);
  d.scales = ToDevice(scales);
  d.zeros = ToDevice(zeros);
  d.prob_cache = nullptr;
  float* w_gpu = ToDevice(std::vector<float>(n, NAN));
  float* gs_gpu = ToDevice(std::vector<float>(groups, NAN));
  float* gw = ToDevice(grad_w);
  uint8_t* codes_gpu = ToDevice(std::vector<uint8_t>(n, 0xff));
  CHECK_CUDA(GsqForwardCuda(d, p, w_gpu, nullptr));
  CHECK_CUDA(GsqBackwardLionCuda(d, p, gw, gs_gpu, nullptr));
  CHECK_CUDA(GsqHardCodesCuda(d, codes_gpu, nullptr));
  CHECK_CUDA(cudaDeviceSynchronize());

  bool w_ok, l_ok, m_ok, g_ok;
  const double w_err = RelErr(ToHost(w_gpu, n), w_cpu, &w_ok);
  const double l_err = RelErr(ToHost(d.logits, levels * n), l_cpu, &l_ok);
  const double m_err = RelErr(ToHost(d.momentum, levels * n), m_cpu, &m_ok);
  const double g_err = RelErr(ToHost(gs_gpu, groups), gs_cpu, &g_ok);
  const std::vector<uint8_t> codes = ToHost(codes_gpu, n);
  int64_t code_mismatch = 0;
  for (int64_t i = 0; i < n; ++i) code_mismatch += codes[i] != codes_cpu[i];
  // Element-wise math rounds as the reference (--fmad=false): weights, logits and momentum must
  // agree to the last bit; the group sums of the scale gradient differ only in summation order.
  const bool ok = w_ok && l_ok && m_ok && g_ok && w_err == 0 && l_err == 0 && m_err == 0 &&
                  g_err < 1e-5 && code_mismatch == 0;
  std::printf("%5lld x %5lld g%-4lld %d-bit: weight %.1e logits %.1e momentum %.1e scale-grad "
              "%.1e codes %lld/%lld differ  %s\n",
              static_cast<long long>(c.rows), static_cast<long long>(c.cols),
              static_cast<long long>(c.group), c.bits, w_err, l_err, m_err, g_err,
              static_cast<long long>(code_mismatch), static_cast<long long>(n),
              ok ? "ok" : "FAIL");
  for (void* ptr : {static_cast<void*>(d.logits), static_cast<void*>(d.momentum),
                    const_cast<void*>(static_cast<const void*>(d.base)),
                    const_cast<void*>(static_cast<const void*>(d.offsets)),
                    static_cast<void*>(d.scales), const_cast<void*>(static_cast<const void*>(d.zeros)),
                    static_cast<void*>(w_gpu), static_cast<void*>(gs_gpu), static_cast<void*>(gw),
                    static_cast<void*>(codes_gpu)}) {
    if (ptr) CHECK_CUDA(cudaFree(ptr));
  }
  return ok;
}

// Kimi-K2 share: `experts` experts of gate_proj (2048 x 7168), group 128.
void Bench(int experts, int bits) {
  const int64_t rows = int64_t{experts} * 2048, cols = 7168, group = 128;
  const int64_t n = rows * cols, groups = n / group;
  const int levels = bits == 2 ? 4 : 5;
  float *logits, *momentum, *base = nullptr, *offsets, *scales, *zeros, *w, *gw, *gs;
  CHECK_CUDA(cudaMalloc(&logits, sizeof(float) * levels * n));
  CHECK_CUDA(cudaMalloc(&momentum, sizeof(float) * levels * n));
  if (levels == 5) CHECK_CUDA(cudaMalloc(&base, sizeof(float) * n));
  CHECK_CUDA(cudaMalloc(&offsets, sizeof(float) * levels));
  CHECK_CUDA(cudaMalloc(&scales, sizeof(float) * groups));
  CHECK_CUDA(cudaMalloc(&zeros, sizeof(float) * groups));
  CHECK_CUDA(cudaMalloc(&w, sizeof(float) * n));
  CHECK_CUDA(cudaMalloc(&gw, sizeof(float) * n));
  CHECK_CUDA(cudaMalloc(&gs, sizeof(float) * groups));
  // Non-trivial contents (never time on zeros): small values from a cheap fill.
  std::vector<float> off(levels);
  for (int k = 0; k < levels; ++k) off[k] = levels == 5 ? k - 2.0f : static_cast<float>(k);
  CHECK_CUDA(cudaMemcpy(offsets, off.data(), sizeof(float) * levels, cudaMemcpyHostToDevice));
  CHECK_CUDA(cudaMemset(logits, 0x3c, sizeof(float) * levels * n));   // ~0.012
  CHECK_CUDA(cudaMemset(momentum, 0x38, sizeof(float) * levels * n)); // ~4e-5
  if (base) CHECK_CUDA(cudaMemset(base, 0x40, sizeof(float) * n));    // ~3.0
  CHECK_CUDA(cudaMemset(scales, 0x3c, sizeof(float) * groups));
  CHECK_CUDA(cudaMemset(zeros, 0x40, sizeof(float) * groups));
  CHECK_CUDA(cudaMemset(gw, 0x3a, sizeof(float) * n));
  GsqTensors t;
  t.rows = rows;
  t.cols = cols;
  t.group_size = group;
  t.levels = levels;
  t.max_code = (1 << bits) - 1;
  t.logits = logits;
  t.momentum = momentum;
  t.base = base;
  t.offsets = offsets;
  t.scales = scales;
  t.zeros = zeros;
  GsqStepParams p;
  cudaEvent_t e0, e1;
  CHECK_CUDA(cudaEventCreate(&e0));
  CHECK_CUDA(cudaEventCreate(&e1));
  auto time_ms = [&](auto&& fn) {
    for (int i = 0; i < 3; ++i) fn();
    std::vector<float> ms;
    for (int i = 0; i < 15; ++i) {
      CHECK_CUDA(cudaEventRecord(e0));
      fn();
      CHECK_CUDA(cudaEventRecord(e1));
      CHECK_CUDA(cudaEventSynchronize(e1));
      float x;
      CHECK_CUDA(cudaEventElapsedTime(&x, e0, e1));
      ms.push_back(x);
    }
    std::sort(ms.begin(), ms.end());
    return ms[ms.size() / 2];
  };
  const float fwd = time_ms([&] { CHECK_CUDA(GsqForwardCuda(t, p, w, nullptr)); });
  const float bwd = time_ms([&] { CHECK_CUDA(GsqBackwardLionCuda(t, p, gw, gs, nullptr)); });
  // Copy bandwidth on the same card, same run: the momentum buffer onto the logits (read+write).
  const size_t copy_bytes = sizeof(float) * levels * n;
  const float copy = time_ms([&] {
    CHECK_CUDA(cudaMemcpyAsync(logits, momentum, copy_bytes, cudaMemcpyDeviceToDevice));
  });
  const double bw = 2.0 * copy_bytes / (copy * 1e-3);  // bytes read + written per second
  const double base_bytes = base ? 4.0 : 0.0;
  const double fwd_bytes = n * (4.0 * levels + base_bytes + 4.0);                // logits, base, w
  const double bwd_bytes = n * (4.0 * levels * 4 + base_bytes + 4.0);            // l, m r/w; base; gw
  std::printf("{\"bench\":\"gsq_step_cuda\",\"experts\":%d,\"bits\":%d,\"weights\":%lld,"
              "\"forward_ms\":%.3f,\"backward_ms\":%.3f,\"copy_gbps\":%.0f,"
              "\"forward_floor_ms\":%.3f,\"backward_floor_ms\":%.3f,"
              "\"forward_over_floor\":%.2f,\"backward_over_floor\":%.2f}\n",
              experts, bits, static_cast<long long>(n), fwd, bwd, bw / 1e9,
              fwd_bytes / bw * 1e3, bwd_bytes / bw * 1e3, fwd / (fwd_bytes / bw * 1e3),
              bwd / (bwd_bytes / bw * 1e3));
  for (void* ptr : {static_cast<void*>(logits), static_cast<void*>(momentum),
                    static_cast<void*>(base), static_cast<void*>(offsets),
                    static_cast<void*>(scales), static_cast<void*>(zeros), static_cast<void*>(w),
                    static_cast<void*>(gw), static_cast<void*>(gs)}) {
    if (ptr) CHECK_CUDA(cudaFree(ptr));
  }
}

int main(int argc, char** argv) {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::printf("gsq_step_cuda_test: no CUDA device: skipped\n");
    return 0;
  }
  const bool bench = argc > 1 && std::strcmp(argv[1], "--bench") == 0;
  if (bench) {
    const int experts = argc > 2 ? std::atoi(argv[2]) : 8;
    for (int bits : {2, 3}) Bench(experts, bits);
    return 0;
  }
  std::mt19937 rng(12345);
  const Case cases[] = {{1, 32, 32, 2},   {3, 96, 32, 3},    {65, 256, 128, 2},
                        {130, 64, 64, 3}, {257, 384, 128, 4}, {33, 7168, 128, 3},
                        {2048, 256, 128, 2}};
  bool ok = true;
  for (const Case& c : cases) {
    for (int rep = 0; rep < 2; ++rep) ok = RunCase(c, rng) && ok;
  }
  std::printf("%s\n", ok ? "all cases agree" : "MISMATCH");
  return ok ? 0 : 1;
}
