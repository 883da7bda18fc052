// GSQ (Gumbel-Softmax Quantization, IST-DASLab 2026; DESIGN.md section 5): from GPTQ codes and
// scales, learn each weight's level and each group's scale through a Gumbel-Softmax relaxation,
// for all experts of a layer at once (batched tensor ops; the step's op count does not depend
// on the number of experts).
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/quant/quantizer.h"

namespace quant::quant {


// Defaults from the reference code (DESIGN.md section 5).
struct GsqOptions {
  int steps = 640;                 // optimizer steps per layer (10 epochs x 64 batches)
  double logits_lr = 2e-4;
  double scales_lr = 1e-4;
  double weight_decay = 1.0;       // on logits only
  double beta1 = 0.9, beta2 = 0.95;  // Lion
  double min_lr_ratio = 0.1;       // cosine schedule down to 0.1 x base
  double kappa_start = 100, kappa_end = 500;
  double tau_start = 2.0, tau_end = 0.05;
  double init_std = 0.01;          // l_k = std (N(0,1) + strength c_k)
  double init_strength = 6.0;
  int64_t batch_tokens = 4096;     // tokens per step over the layer (16 windows of 256)
  GsqObjective objective = GsqObjective::kExpertOutput;
  uint64_t seed = 0;
  // Index of the families' first member in the layer's whole family (an expert shard's first
  // expert). Each member's random draws (start-logit noise, token order, Gumbel noise) depend
  // on its index in the layer, never on the shard, so sharded runs give the codes of one run.
  int64_t member_offset = 0;
  int threads = 2;                 // for the fused element-wise kernels
  // Run the step on the GPU (CUDA kernels + ATen on CUDA tensors); needs a CUDA build
  // (QUANT_WITH_CUDA) and a CUDA-enabled libtorch. Same results as the CPU path up to the order
  // of the matmuls' and the scale gradients' sums.
  bool cuda = false;
  // Asked before every step; true stops the run there and RunGsq returns Cancelled (a cancelled
  // job's task stops at its next step boundary instead of running to the end). Unset: never.
  std::function<bool()> should_stop;
  // Told (step done, steps, loss) about once per `report_seconds` and after the last step; the
  // loss is the objective on that step's soft weights (expert-output: the mean squared error
  // over the step's routed rows; layer-local: the sum of tr(dW H dW^T)). Computed only on the
  // steps reported (one reduction; a device sync on the GPU). Unset: no reports.
  std::function<void(int64_t step, int64_t steps, double loss)> on_step;
  double report_seconds = 1.0;
};

// Whether RunGsq can take options.cuda here (built with the kernels, libtorch sees a GPU).
bool GsqCudaAvailable();

// Waits for the GPU's queued work (no-op without CUDA), so host timers measure device work.
void SyncDevice();

// A family of same-shaped linears trained together (e.g. gate_proj of every expert).
struct GsqFamily {
  std::string name;                       // "gate_proj", "up_proj", "down_proj", ...
  std::vector<QuantizedWeight> init;      // GPTQ start, one per member
  std::vector<at::Tensor> original;       // float32 [out, in] per member
  std::vector<at::Tensor> hessian;        // layer-local: float32 [in, in] per member (or undefined)
};

// Expert-output objective data: per expert its routed inputs and full-precision outputs.
struct GsqExpertTokens {
  std::vector<at::Tensor> inputs;   // float32 [n_e, hidden]
  std::vector<at::Tensor> targets;  // float32 [n_e, hidden]
  int64_t layer_tokens = 0;         // calibration tokens that entered the layer
  // Of the whole layer when the families are one shard of it (<= 0: these members' own):
  // routed (token, expert) pairs, and experts. They size each step's minibatch and the loss's
  // normalisation, so a shard steps exactly as its members do in one run.
  int64_t layer_routed = 0;
  int64_t layer_experts = 0;
};

struct GsqMemberReport {
  double loss_before = 0;       // objective with the GPTQ codes (hard)
  double loss_after = 0;        // objective with the final GSQ codes and bf16 scales (hard)
  double changed_fraction = 0;  // codes that differ from GPTQ's
  int64_t tokens = 0;           // expert-output: routed tokens; 0: kept GPTQ (no data)
};

struct GsqResult {
  std::vector<std::vector<QuantizedWeight>> families;  // same order as the input families
  std::vector<std::vector<GsqMemberReport>> reports;   // [family][member]
  double seconds = 0;
};

// Expert-output objective: families must be exactly {gate_proj, up_proj, down_proj} of the same
// experts; members with no tokens keep their GPTQ codes. Layer-local: any families, each member
// needs its Hessian (undefined: identity). Each family keeps the bits and grid of its GPTQ start
// (families may differ: SLQ); `scheme` applies where a start does not name one.
absl::StatusOr<GsqResult> RunGsq(const std::vector<GsqFamily>& families,
                                 const GsqExpertTokens* tokens, const QuantScheme& scheme,
                                 const GsqOptions& options);

}  // namespace quant::quant
