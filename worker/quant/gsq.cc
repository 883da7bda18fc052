// RunGsq: batched GSQ over all members of each family. Element-wise work runs in the fused
// kernels of kernels/gsq_step.h; the matmuls of the objective are batched over experts (bmm).
#include "worker/quant/gsq.h"

#include <ATen/CPUGeneratorImpl.h>

#include <chrono>
#include <cmath>
#include <mutex>
#include <numbers>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "kernels/gsq_step.h"
#if defined(QUANT_WITH_CUDA)
#include "kernels/gsq_step_cuda.h"
#endif
#include "worker/quant/blas_threads.h"

namespace quant::quant {
namespace {

// Training state of one family, flattened to rows = members * out, cols = in.
struct FamilyState {
  int64_t members = 0, out = 0, in = 0, group = 0;
  int levels = 0;
  at::Tensor logits, momentum;   // [K, members*out*in]
  at::Tensor base;               // [members*out*in] start codes (shift mode) or undefined
  at::Tensor offsets;            // [K]
  at::Tensor scales, scale_momentum, grad_scales, zeros;  // [members*out*in/group]
  at::Tensor init_codes;         // uint8 [members, out, in]
  at::Tensor weight;             // float32 [members, out, in]: forward output
  at::Tensor prob_cache;         // [K, members*out*in]: forward's probabilities for backward
  at::Tensor original;           // float32 [members, out, in]
  at::Tensor hessian;            // float32 [members, in, in] (layer-local)
  QuantScheme scheme;            // the family's bits and grid: its GPTQ start's
  kernels::GsqTensors view;
  bool cuda = false;             // tensors on the GPU, kernels from gsq_step.cu
};

at::Tensor Stack(const std::vector<at::Tensor>& ts) { return at::stack(ts, 0).contiguous(); }

void BindView(FamilyState& s, int max_code);

// A generator for one member's draws: a pure function of the seed, the stream (which family's
// start noise, or the token order) and the member's index in the layer's whole family.
at::Generator MemberGenerator(uint64_t seed, uint64_t stream, int64_t member) {
  uint64_t x = seed ^ (stream * 0x9e3779b97f4a7c15ull) ^ (static_cast<uint64_t>(member) << 20);
  x ^= x >> 33;  // splitmix64's finaliser: nearby inputs give unrelated seeds
  x *= 0xff51afd7ed558ccdull;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ull;
  x ^= x >> 33;
  return at::make_generator<at::CPUGeneratorImpl>(x);
}

absl::StatusOr<FamilyState> InitFamily(const GsqFamily& f, const QuantScheme& scheme,
                                       const GsqOptions& options, uint64_t family) {
  FamilyState s;
  if (f.init.empty()) return absl::InvalidArgumentError("GSQ: empty family " + f.name);
  s.members = static_cast<int64_t>(f.init.size());
  s.out = f.init[0].codes.size(0);
  s.in = f.init[0].codes.size(1);
  s.group = f.init[0].group_size;
  // Families may differ in bits (SLQ gives each unit its own); members of one family may not.
  s.scheme = f.init[0].scheme.bits > 0 ? f.init[0].scheme : scheme;
  RETURN_IF_ERROR(ValidateScheme(s.scheme));
  std::vector<at::Tensor> codes, scales, zeros;
  for (const QuantizedWeight& q : f.init) {
    if (q.codes.size(0) != s.out || q.codes.size(1) != s.in || q.group_size != s.group) {
      return absl::InvalidArgumentError("GSQ: members of " + f.name + " differ in shape");
    }
    if (q.scheme.bits > 0 && (q.scheme.bits != s.scheme.bits || q.scheme.grid != s.scheme.grid)) {
      return absl::InvalidArgumentError("GSQ: members of " + f.name + " differ in bits or grid");
    }
    codes.push_back(q.codes);
    scales.push_back(q.scales);
    zeros.push_back(q.zeros.to(at::kFloat));
  }
  s.init_codes = Stack(codes);
  s.scales = Stack(scales).reshape({-1}).clone();
  s.zeros = Stack(zeros).reshape({-1}).contiguous();
  s.scale_momentum = at::zeros_like(s.scales);
  s.grad_scales = at::zeros_like(s.scales);
  const int64_t n = s.members * s.out * s.in;
  const int max_code = (1 << s.scheme.bits) - 1;
  at::Tensor u0 = s.init_codes.reshape({-1}).to(at::kFloat);
  // 2 bits: one logit per code (4 levels); more bits: shifts -2..2 around the GPTQ code.
  at::Tensor values;  // [K, n]
  if (s.scheme.bits == 2) {
    s.levels = 4;
    s.offsets = at::arange(4, at::kFloat);
    values = s.offsets.unsqueeze(1).expand({4, n});
  } else {
    s.levels = 5;
    s.offsets = at::arange(-2, 3, at::kFloat);
    s.base = u0.contiguous();
    values = s.base.unsqueeze(0) + s.offsets.unsqueeze(1);
  }
  at::Tensor valid = at::logical_and(values >= 0, values <= max_code).to(at::kFloat);
  at::Tensor c = -0.5 * (u0.unsqueeze(0) - values).pow(2);
  at::Tensor mean = (c * valid).sum(0, true) / valid.sum(0, true);
  std::vector<at::Tensor> member_noise;
  for (int64_t m = 0; m < s.members; ++m) {
    at::Generator gen = MemberGenerator(options.seed, family, options.member_offset + m);
    member_noise.push_back(
        at::randn({s.levels, s.out * s.in}, gen, at::TensorOptions().dtype(at::kFloat)));
  }
  at::Tensor noise = at::cat(member_noise, 1);
  s.logits = (options.init_std * (noise + options.init_strength * (c - mean)) * valid).contiguous();
  s.momentum = at::zeros_like(s.logits);
  s.weight = at::empty({s.members, s.out, s.in}, at::kFloat);
  if (!f.original.empty()) s.original = Stack(f.original).to(at::kFloat);
  if (!f.hessian.empty()) {
    std::vector<at::Tensor> hs;
    for (const at::Tensor& h : f.hessian) {
      hs.push_back(h.defined() ? h.to(at::kFloat) : at::eye(s.in, at::kFloat));
    }
    s.hessian = Stack(hs);
  }
  s.prob_cache = at::empty_like(s.logits);
  BindView(s, max_code);
  return s;
}

void BindView(FamilyState& s, int max_code) {
  kernels::GsqTensors& v = s.view;
  v.rows = s.members * s.out;
  v.cols = s.in;
  v.group_size = s.group;
  v.levels = s.levels;
  v.max_code = max_code;
  v.logits = s.logits.data_ptr<float>();
  v.momentum = s.momentum.data_ptr<float>();
  v.base = s.base.defined() ? s.base.data_ptr<float>() : nullptr;
  v.offsets = s.offsets.data_ptr<float>();
  v.scales = s.scales.data_ptr<float>();
  v.scale_momentum = s.scale_momentum.data_ptr<float>();
  v.zeros = s.zeros.data_ptr<float>();
  v.prob_cache = s.prob_cache.defined() ? s.prob_cache.data_ptr<float>() : nullptr;
}

// Moves the training state to the GPU (the GPU replays the noise: no probability cache), or
// back to the CPU for the final codes.
void PlaceFamily(FamilyState& s, bool cuda, int max_code) {
  const at::Device device = cuda ? at::Device(at::kCUDA) : at::Device(at::kCPU);
  for (at::Tensor* t : {&s.logits, &s.momentum, &s.base, &s.offsets, &s.scales,
                        &s.scale_momentum, &s.grad_scales, &s.zeros, &s.weight, &s.original,
                        &s.hessian}) {
    if (t->defined()) *t = t->to(device).contiguous();
  }
  s.prob_cache = cuda ? at::Tensor() : at::empty_like(s.logits);
  s.cuda = cuda;
  BindView(s, max_code);
}

// The step's element-wise work for members [m0, m1) of one family: Gumbel-Softmax forward into
// s.weight, or the replayed backward + Lion on the logits and on the members' scales.
absl::Status CudaStatus(int code, const char* what);

void ForwardMembers(FamilyState& s, const kernels::GsqStepParams& p, int64_t m0, int64_t m1) {
  kernels::GsqForward_ref(s.view, p, s.weight.data_ptr<float>(), m0 * s.out, m1 * s.out);
}

// The GPU step of one whole family: forward, or backward + Lion on logits and scales.
absl::Status ForwardCuda(FamilyState& s, const kernels::GsqStepParams& p) {
#if defined(QUANT_WITH_CUDA)
  return CudaStatus(kernels::GsqForwardCuda(s.view, p, s.weight.data_ptr<float>(), nullptr),
                    "GSQ forward");
#else
  return absl::FailedPreconditionError("GSQ on CUDA: this build has no CUDA kernels");
#endif
}

absl::Status BackwardCuda(FamilyState& s, const at::Tensor& grad_w,
                          const kernels::GsqStepParams& p) {
#if defined(QUANT_WITH_CUDA)
  float* gs = s.grad_scales.data_ptr<float>();
  RETURN_IF_ERROR(CudaStatus(
      kernels::GsqBackwardLionCuda(s.view, p, grad_w.data_ptr<float>(), gs, nullptr),
      "GSQ backward"));
  return CudaStatus(kernels::LionUpdateCuda(s.scales.data_ptr<float>(),
                                            s.scale_momentum.data_ptr<float>(), gs,
                                            s.scales.numel(), p.lr_scales, 0.0f, p.beta1,
                                            p.beta2, nullptr),
                    "GSQ scale update");
#else
  return absl::FailedPreconditionError("GSQ on CUDA: this build has no CUDA kernels");
#endif
}

absl::Status CudaStatus(int code, const char* what) {
#if defined(QUANT_WITH_CUDA)
  if (code != 0) {
    return absl::InternalError(absl::StrCat(
        what, ": ", cudaGetErrorString(static_cast<cudaError_t>(code))));
  }
#endif
  return absl::OkStatus();
}

void BackwardMembers(FamilyState& s, const at::Tensor& grad_w, const kernels::GsqStepParams& p,
                     int64_t m0, int64_t m1) {
  float* gs = s.grad_scales.data_ptr<float>();
  kernels::GsqBackwardLion_ref(s.view, p, grad_w.data_ptr<float>(), gs, m0 * s.out, m1 * s.out);
  const int64_t per_member = s.out * s.in / s.group;
  kernels::LionUpdate_ref(s.scales.data_ptr<float>() + m0 * per_member,
                          s.scale_momentum.data_ptr<float>() + m0 * per_member,
                          gs + m0 * per_member, (m1 - m0) * per_member, p.lr_scales, 0.0f,
                          p.beta1, p.beta2);
}

// Final codes and bf16 scales of every member.
std::vector<QuantizedWeight> HardResult(const FamilyState& s) {
  at::Tensor codes = at::empty({s.members, s.out, s.in}, at::kByte);
  kernels::GsqHardCodes_ref(s.view, codes.data_ptr<uint8_t>(), 0, s.view.rows);
  at::Tensor scales = s.scales.to(at::kBFloat16).to(at::kFloat).view({s.members, s.out, -1});
  at::Tensor zeros = s.zeros.to(at::kInt).view({s.members, s.out, -1});
  std::vector<QuantizedWeight> result;
  for (int64_t m = 0; m < s.members; ++m) {
    QuantizedWeight q;
    q.scheme = s.scheme;
    q.group_size = static_cast<int>(s.group);
    q.codes = codes[m].clone();
    q.scales = scales[m].clone();
    q.zeros = zeros[m].clone();
    result.push_back(std::move(q));
  }
  return result;
}

at::Tensor Dequant(const std::vector<QuantizedWeight>& qs) {
  std::vector<at::Tensor> ws;
  for (const QuantizedWeight& q : qs) ws.push_back(q.Dequantize());
  return Stack(ws);
}

// SwiGLU expert MLP, batched: x [E, M, H], gate/up [E, I, H], down [E, H, I] -> [E, M, H].
at::Tensor ExpertMlp(const at::Tensor& x, const at::Tensor& gate, const at::Tensor& up,
                     const at::Tensor& down) {
  at::Tensor a = at::bmm(x, gate.transpose(1, 2));
  at::Tensor h = at::silu(a) * at::bmm(x, up.transpose(1, 2));
  return at::bmm(h, down.transpose(1, 2));
}

double Schedule(double start, double end, int64_t step, int64_t steps) {
  return steps <= 1 ? end : start + (end - start) * static_cast<double>(step) / (steps - 1);
}

}  // namespace

void SyncDevice() {
#if defined(QUANT_WITH_CUDA)
  if (at::hasCUDA()) cudaDeviceSynchronize();
#endif
}

bool GsqCudaAvailable() {
#if defined(QUANT_WITH_CUDA)
  return at::hasCUDA();
#else
  return false;
#endif
}

absl::StatusOr<GsqResult> RunGsq(const std::vector<GsqFamily>& families,
                                 const GsqExpertTokens* tokens, const QuantScheme& scheme,
                                 const GsqOptions& options) {
  const auto start = std::chrono::steady_clock::now();
  RETURN_IF_ERROR(ValidateScheme(scheme));
  if (options.steps < 0) return absl::InvalidArgumentError("GSQ: steps must be >= 0");
  std::vector<FamilyState> states;
  for (size_t f = 0; f < families.size(); ++f) {
    ASSIGN_OR_RETURN(FamilyState s, InitFamily(families[f], scheme, options, f));
    states.push_back(std::move(s));
  }
  const bool expert_output = options.objective == GsqObjective::kExpertOutput;

  // Expert-output: every expert draws a fixed-size minibatch from its own shuffled token stream
  // each step, so all experts batch into one bmm without padding. Lion's update is the sign of a
  // per-parameter average, so an expert's step does not depend on how many tokens it saw.
  at::Tensor x_all, y_all, stream, stream_offset, stream_len;
  int64_t rows_per_expert = 0, layer_experts = 0;
  std::vector<int64_t> counts;
  if (expert_output) {
    if (tokens == nullptr || states.size() != 3 || families[0].name != "gate_proj" ||
        families[1].name != "up_proj" || families[2].name != "down_proj") {
      return absl::InvalidArgumentError(
          "GSQ expert-output objective needs gate_proj, up_proj, down_proj families and tokens");
    }
    const int64_t experts = states[0].members;
    if (static_cast<int64_t>(tokens->inputs.size()) != experts ||
        tokens->targets.size() != tokens->inputs.size()) {
      return absl::InvalidArgumentError("GSQ: one token set per expert is needed");
    }
    const int64_t hidden = states[0].in;
    std::vector<at::Tensor> xs, ys, perms;
    std::vector<int64_t> offsets, lens;
    int64_t total = 0;
    for (int64_t e = 0; e < experts; ++e) {
      const int64_t n = tokens->inputs[e].size(0);
      counts.push_back(n);
      xs.push_back(tokens->inputs[e].to(at::kFloat));
      ys.push_back(tokens->targets[e].to(at::kFloat));
      offsets.push_back(total);
      lens.push_back(std::max<int64_t>(n, 1));
      at::Generator gen = MemberGenerator(options.seed, /*stream=*/1000, options.member_offset + e);
      perms.push_back(n > 0 ? at::randperm(n, gen, at::TensorOptions().dtype(at::kLong)) + total
                            : at::empty({0}, at::kLong));
      total += n;
    }
    // A zero row at the end stands in for experts without tokens: zero input, zero target,
    // zero gradient, so their codes stay GPTQ's.
    xs.push_back(at::zeros({1, hidden}, at::kFloat));
    ys.push_back(at::zeros({1, hidden}, at::kFloat));
    x_all = at::cat(xs, 0);
    y_all = at::cat(ys, 0);
    for (int64_t e = 0; e < experts; ++e) {
      if (counts[e] == 0) perms[e] = at::full({1}, total, at::kLong);
    }
    stream = at::cat(perms, 0);
    // Start of each expert's stream inside `stream` (empty experts: their one zero-row entry).
    std::vector<int64_t> stream_starts;
    int64_t pos = 0;
    for (int64_t e = 0; e < experts; ++e) {
      stream_starts.push_back(pos);
      pos += lens[e];
    }
    stream_offset = at::tensor(stream_starts, at::kLong).unsqueeze(1);
    stream_len = at::tensor(lens, at::kLong).unsqueeze(1);
    int64_t routed = 0;
    for (int64_t n : counts) routed += n;
    if (tokens->layer_routed > 0) routed = tokens->layer_routed;
    layer_experts = tokens->layer_experts > 0 ? tokens->layer_experts : experts;
    // Rows per expert per step: the layer's batch of tokens times the routed pairs per token,
    // shared evenly over the experts (16 windows x 256 tokens x top-k / E in the reference).
    const double pairs_per_token =
        static_cast<double>(routed) / std::max<int64_t>(1, tokens->layer_tokens);
    rows_per_expert = std::max<int64_t>(
        1, static_cast<int64_t>(std::ceil(options.batch_tokens * pairs_per_token / layer_experts)));
  }

  // Losses with hard weights, per expert (expert-output) or per member (layer-local).
  auto hard_losses = [&](const std::vector<std::vector<QuantizedWeight>>& qs) {
    std::vector<std::vector<double>> losses(states.size());
    if (expert_output) {
      at::Tensor g = Dequant(qs[0]), u = Dequant(qs[1]), d = Dequant(qs[2]);
      std::vector<double> per_expert;
      for (int64_t e = 0; e < states[0].members; ++e) {
        if (counts[e] == 0) {
          per_expert.push_back(0.0);
          continue;
        }
        at::Tensor x = tokens->inputs[e].to(at::kFloat).unsqueeze(0);
        at::Tensor y = ExpertMlp(x, g[e].unsqueeze(0), u[e].unsqueeze(0), d[e].unsqueeze(0));
        per_expert.push_back((y - tokens->targets[e].to(at::kFloat).unsqueeze(0))
                                 .pow(2)
                                 .mean()
                                 .item<double>());
      }
      for (auto& l : losses) l = per_expert;
    } else {
      for (size_t f = 0; f < states.size(); ++f) {
        at::Tensor dw = Dequant(qs[f]) - states[f].original;
        at::Tensor l = (at::bmm(dw, states[f].hessian) * dw).sum({1, 2});
        for (int64_t m = 0; m < states[f].members; ++m) losses[f].push_back(l[m].item<double>());
      }
    }
    return losses;
  };
  std::vector<std::vector<QuantizedWeight>> init;
  for (const GsqFamily& f : families) init.push_back(f.init);
  if (!expert_output) {
    for (size_t f = 0; f < states.size(); ++f) {
      if (!states[f].original.defined() || !states[f].hessian.defined()) {
        return absl::InvalidArgumentError("GSQ layer-local objective needs weights and Hessians");
      }
    }
  }
  const std::vector<std::vector<double>> before = hard_losses(init);

  kernels::GsqStepParams p;
  p.seed = options.seed;
  p.element_offset = static_cast<uint64_t>(options.member_offset * states[0].out * states[0].in);
  p.beta1 = static_cast<float>(options.beta1);
  p.beta2 = static_cast<float>(options.beta2);
  p.weight_decay = static_cast<float>(options.weight_decay);
  const int64_t steps = options.steps;
  const at::Device device = options.cuda ? at::Device(at::kCUDA) : at::Device(at::kCPU);
  if (options.cuda) {
    if (!GsqCudaAvailable()) {
      return absl::FailedPreconditionError(
          "GSQ on CUDA: no CUDA device, or this build or its libtorch has no CUDA");
    }
    for (FamilyState& s : states) PlaceFamily(s, /*cuda=*/true, s.view.max_code);
    for (at::Tensor* t : {&x_all, &y_all, &stream, &stream_offset, &stream_len}) {
      if (t->defined()) *t = t->to(device);
    }
  }
  std::vector<at::Tensor> grads;  // dLoss/dW per family; each shard writes its members' slice
  for (const FamilyState& s : states) grads.push_back(at::empty_like(s.weight));
  // The loss is a mean over the whole layer's rows (a shard's members step as in one run).
  const int64_t out_numel = expert_output ? layer_experts * rows_per_expert * states[2].out : 0;
  ScopedBlasThreads single_threaded_blas(1);
  // Progress reports (options.on_step): the loss is summed only on the steps reported.
  std::mutex loss_mu;
  at::Tensor step_loss;  // a 0-dim sum of this step's objective, while one is wanted
  bool want_loss = false;
  auto add_loss = [&](const at::Tensor& part) {
    std::lock_guard<std::mutex> lock(loss_mu);
    step_loss = step_loss.defined() ? step_loss + part : part;
  };
  auto last_report = std::chrono::steady_clock::now();
  auto report = [&](int64_t step) {
    if (!want_loss) return;
    options.on_step(step + 1, steps, step_loss.defined() ? step_loss.item<double>() : 0.0);
    last_report = std::chrono::steady_clock::now();
  };
  for (int64_t step = 0; step < steps; ++step) {
    want_loss = options.on_step &&
                (step + 1 == steps ||
                 std::chrono::duration<double>(std::chrono::steady_clock::now() - last_report)
                         .count() >= options.report_seconds);
    step_loss = at::Tensor();
    if (options.should_stop && options.should_stop()) {
      return absl::CancelledError(absl::StrCat("GSQ stopped at step ", step, " of ", steps));
    }
    p.step = static_cast<uint64_t>(step);
    p.kappa = static_cast<float>(Schedule(options.kappa_start, options.kappa_end, step, steps));
    p.tau = static_cast<float>(Schedule(options.tau_start, options.tau_end, step, steps));
    const double cosine = 0.5 * (1.0 + std::cos(std::numbers::pi * step / steps));
    const double lr_factor = options.min_lr_ratio + (1.0 - options.min_lr_ratio) * cosine;
    p.lr_logits = static_cast<float>(options.logits_lr * lr_factor);
    p.lr_scales = static_cast<float>(options.scales_lr * lr_factor);
    at::Tensor pos;
    if (expert_output) {
      pos = (at::arange(rows_per_expert, at::TensorOptions().dtype(at::kLong).device(device))
                 .unsqueeze(0) +
             step * rows_per_expert)
                .remainder(stream_len);
    }
    // The objective's matmuls for members [m0, m1): dLoss/dW into their slices of grads.
    auto expert_matmuls = [&](int64_t m0, int64_t m1) {
      const int64_t count = m1 - m0;
      // Each expert's next rows_per_expert tokens of its stream, as one gather.
      at::Tensor idx = stream.index_select(
          0, (stream_offset.narrow(0, m0, count) + pos.narrow(0, m0, count)).reshape({-1}));
      at::Tensor x = x_all.index_select(0, idx).view({count, rows_per_expert, -1});
      at::Tensor y = y_all.index_select(0, idx).view({count, rows_per_expert, -1});
      at::Tensor wg = states[0].weight.narrow(0, m0, count);
      at::Tensor wu = states[1].weight.narrow(0, m0, count);
      at::Tensor wd = states[2].weight.narrow(0, m0, count);
      at::Tensor ag = at::bmm(x, wg.transpose(1, 2));
      at::Tensor au = at::bmm(x, wu.transpose(1, 2));
      at::Tensor sg = at::sigmoid(ag);
      at::Tensor act = ag * sg;
      at::Tensor h = act * au;
      at::Tensor out = at::bmm(h, wd.transpose(1, 2));
      // d/dy of mean((y - target)^2) over the step's rows of all experts.
      at::Tensor diff = out - y;
      if (want_loss) add_loss(diff.square().sum() / static_cast<double>(out_numel));
      at::Tensor dy = diff * (2.0 / static_cast<double>(out_numel));
      at::Tensor g2 = grads[2].narrow(0, m0, count);
      at::bmm_out(g2, dy.transpose(1, 2), h);
      at::Tensor dh = at::bmm(dy, wd);
      at::Tensor dau = dh * act;
      at::Tensor dag = dh * au * sg * (1.0 + ag * (1.0 - sg));
      at::Tensor g0 = grads[0].narrow(0, m0, count), g1 = grads[1].narrow(0, m0, count);
      at::bmm_out(g0, dag.transpose(1, 2), x);
      at::bmm_out(g1, dau.transpose(1, 2), x);
    };
    auto local_matmuls = [&](size_t f, int64_t m0, int64_t m1) {
      FamilyState& s = states[f];
      const int64_t count = m1 - m0;
      at::Tensor g = grads[f].narrow(0, m0, count);
      at::Tensor dw = s.weight.narrow(0, m0, count) - s.original.narrow(0, m0, count);
      at::bmm_out(g, dw, s.hessian.narrow(0, m0, count));
      if (want_loss) add_loss((dw * g).sum());  // tr(dW H dW^T), before the factor 2
      g.mul_(2.0);
    };
    if (options.cuda) {
      // The GPU takes each family whole: one kernel launch per family and phase.
      for (FamilyState& s : states) RETURN_IF_ERROR(ForwardCuda(s, p));
      if (expert_output) {
        expert_matmuls(0, states[0].members);
      } else {
        for (size_t f = 0; f < states.size(); ++f) local_matmuls(f, 0, states[f].members);
      }
      for (size_t f = 0; f < states.size(); ++f) {
        RETURN_IF_ERROR(BackwardCuda(states[f], grads[f], p));
      }
      report(step);
      continue;
    }
    // CPU: members are independent within a step (per-member matmuls, per-parameter Lion), so
    // the step runs as one shard per thread over contiguous member ranges, each making its own
    // single-threaded BLAS calls: no BLAS pool spins against the shards.
    if (expert_output) {
      kernels::ParallelRows(states[0].members, options.threads, [&](int64_t m0, int64_t m1) {
        for (FamilyState& s : states) ForwardMembers(s, p, m0, m1);
        expert_matmuls(m0, m1);
        for (size_t f = 0; f < states.size(); ++f) {
          BackwardMembers(states[f], grads[f], p, m0, m1);
        }
      });
    } else {
      for (size_t f = 0; f < states.size(); ++f) {
        FamilyState& s = states[f];
        kernels::ParallelRows(s.members, options.threads, [&](int64_t m0, int64_t m1) {
          ForwardMembers(s, p, m0, m1);
          local_matmuls(f, m0, m1);
          BackwardMembers(s, grads[f], p, m0, m1);
        });
      }
    }
    report(step);
  }
  if (options.cuda) {
    for (FamilyState& s : states) PlaceFamily(s, /*cuda=*/false, s.view.max_code);
  }

  GsqResult result;
  for (const FamilyState& s : states) result.families.push_back(HardResult(s));
  // Experts that saw no token keep their GPTQ start exactly (scales included).
  if (expert_output) {
    for (size_t f = 0; f < states.size(); ++f) {
      for (int64_t e = 0; e < states[f].members; ++e) {
        if (counts[e] == 0) result.families[f][e] = families[f].init[e];
      }
    }
  }
  const std::vector<std::vector<double>> after = hard_losses(result.families);
  for (size_t f = 0; f < states.size(); ++f) {
    std::vector<GsqMemberReport> reports;
    for (int64_t m = 0; m < states[f].members; ++m) {
      GsqMemberReport r;
      r.loss_before = before[f][m];
      r.loss_after = after[f][m];
      r.changed_fraction =
          result.families[f][m].codes.ne(families[f].init[m].codes).to(at::kDouble).mean()
              .item<double>();
      r.tokens = expert_output ? counts[m] : 0;
      reports.push_back(r);
    }
    result.reports.push_back(std::move(reports));
  }
  result.seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return result;
}

}  // namespace quant::quant
