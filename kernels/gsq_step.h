// The GSQ step's element-wise work (DESIGN.md section 5), framework-free: Gumbel-Softmax over
// each weight's candidate levels -> the expected weight (forward), and the replayed softmax ->
// logit gradient -> Lion update fused (backward), so logit gradients are never stored. Noise
// comes from a counter-based hash of (seed, step, element, level), so backward replays forward's
// draw exactly. The plain C++ versions here are the references the CUDA kernels must match, and
// the CPU path.
#pragma once

#include <cstdint>

namespace quant::kernels {

// One linear family (e.g. the gate_proj of every expert of a layer) flattened to rows x cols:
// rows = experts * out_features, cols = in_features; groups of `group_size` columns share a
// scale and a zero point. Logits and their Lion momentum are level-major: [levels][rows*cols],
// so each level is one contiguous array (vectorises on CPU, coalesces on GPU).
struct GsqTensors {
  int64_t rows = 0;
  int64_t cols = 0;
  int64_t group_size = 0;      // divides cols
  int levels = 0;              // K: 4 (2-bit: every code) or 5 (shifts -2..2 around the start)
  int max_code = 0;            // 2^bits - 1: levels outside [0, max_code] are masked out
  float* logits = nullptr;     // [levels][rows*cols]
  float* momentum = nullptr;   // [levels][rows*cols], Lion's exp_avg
  const float* base = nullptr; // [rows*cols] start code u0 (shift mode); nullptr: absolute levels
  const float* offsets = nullptr;  // [levels]: the level values (absolute) or shifts
  float* scales = nullptr;     // [rows*cols/group_size], fp32 while training
  float* scale_momentum = nullptr;  // same shape
  const float* zeros = nullptr;     // [rows*cols/group_size], fixed (symmetric: 2^(bits-1))
  // Optional [levels][rows*cols]: forward stores the probabilities and backward reads them
  // instead of replaying the noise (the CPU trades 4 bytes per logit for half the math; the
  // GPU kernel replays, so no per-logit state is stored).
  float* prob_cache = nullptr;
};

struct GsqStepParams {
  float kappa = 100.0f;   // logit multiplier, annealed 100 -> 500
  float tau = 2.0f;       // temperature, annealed 2.0 -> 0.05
  uint64_t seed = 0;
  uint64_t step = 0;
  // Added to every element index before hashing: a shard of a family draws the noise its
  // elements get in the whole family (GsqOptions::member_offset).
  uint64_t element_offset = 0;
  float lr_logits = 2e-4f;
  float lr_scales = 1e-4f;
  float weight_decay = 1.0f;  // decoupled, logits only
  float beta1 = 0.9f;
  float beta2 = 0.95f;
};

// w_out[i] = scale_g * (sum_k softmax_k((kappa * l_ik + gumbel_ik) / tau) * v_ik - zero_g),
// for rows [row_begin, row_end).
void GsqForward_ref(const GsqTensors& t, const GsqStepParams& p, float* w_out, int64_t row_begin,
                    int64_t row_end);

// Given dLoss/dW (grad_w, [rows*cols]) replays the softmax, forms dLoss/dlogit =
// (kappa/tau) p_k (v_k - E[v]) scale dW, applies Lion to logits in place, and writes the scale
// gradient sum over each group of dW (E[v] - zero) into grad_scales [rows*cols/group_size].
void GsqBackwardLion_ref(const GsqTensors& t, const GsqStepParams& p, const float* grad_w,
                         float* grad_scales, int64_t row_begin, int64_t row_end);

// Lion on the scales with their gradient (no weight decay): [n] elements.
void LionUpdate_ref(float* param, float* momentum, const float* grad, int64_t n, float lr,
                    float weight_decay, float beta1, float beta2);

// Final hard codes: u = level value of argmax_k over valid levels, [rows*cols].
void GsqHardCodes_ref(const GsqTensors& t, uint8_t* codes, int64_t row_begin, int64_t row_end);

// Runs fn(begin, end) over [0, n) split into `threads` contiguous chunks (threads <= 1: inline).
template <typename Fn>
void ParallelRows(int64_t n, int threads, Fn&& fn);

// The counter-based uniform in [0, 1) used for the Gumbel noise (24 random bits).
float CounterUniform(uint64_t seed, uint64_t step, uint64_t element, int level);

}  // namespace quant::kernels

#include "kernels/parallel_rows.inc"
