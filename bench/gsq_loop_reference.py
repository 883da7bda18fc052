#!/usr/bin/env python3
"""The GSQ step as the reference code runs it, for the issue-11 comparison, on one GPU's share of
a Kimi-K2 MoE layer (experts of gate/up 2048x7168 and down 7168x2048, group 128): bf16 logits as
parameters, Gumbel noise from torch.rand, softmax over the levels, the expected weight times the
per-group fp32 scales, the experts' forward and backward by autograd, then Lion (lion-pytorch's
update) over every parameter with the reference's two groups. Weights and routed tokens are
synthetic, as in kernels/gsq_kimi_bench.cu. Two styles:

--style reference (expert-output only; the default there): the step as IST-DASLab/GSQ's trainer
  runs it for Kimi-K2 on 8 GPUs (configs/kimi-k2/kimi_k2_instruct.yaml: batch 64 sequences, so 8
  per GPU, device_microbatch_size 2, hence 4 microbatches per step; src/trainer.py train_step and
  src/models/kimi_k2_dist.py calculate_mse): for each microbatch, fresh soft weights of every
  linear (logits laid out [levels, out, in]; the noise's random state kept so the backward
  replays it instead of storing the softmax, as the reference's GumbelSoftmaxFunction does; at 3
  bits the shifts -2..2 around the start code, masked outside the grid), the experts' original
  outputs recomputed without gradients as the target, the quantized outputs, one MSE over all
  experts' tokens, backward scaled by 1/4; Lion once per step. Not included: the router and the
  token exchange of each microbatch (communication; on one GPU there is none to time).
--style minimal: the same step reduced to the work our step does (one soft weight per step over
  all of an expert's tokens, the target given, autograd storing the softmax, logits laid out
  [out, in, levels]); the only style for --objective layer-local, which the reference lacks.

Usage: bench/gsq_loop_reference.py [--experts 48] [--tokens 5461] [--bits 2|3]
                                   [--objective expert-output|layer-local]
                                   [--style reference|minimal] [--microbatches 4] [--steps 50]
       bench/gsq_loop_reference.py --check
Prints one JSON line: median and mean step time over the timed steps, peak GPU memory.
"""
import argparse
import json
import time

import torch

HIDDEN, INTER, GROUP = 7168, 2048, 128
EPS = 1e-8


class Linear:
    """One quantized linear of one expert, minimal style: logits [out, in, K], scales per group."""

    def __init__(self, out, inp, bits, gen, dev):
        self.out, self.inp = out, inp
        levels = 4 if bits == 2 else 5
        self.logits = (0.05 * (2 * torch.rand(out, inp, levels, generator=gen, device=dev) - 1)
                       ).to(torch.bfloat16).requires_grad_()
        self.scales = torch.full((out, inp // GROUP, 1), 0.01, device=dev).requires_grad_()
        self.zero = float(1 << (bits - 1))
        if bits == 2:  # every code of the 2-bit grid
            self.base = None
            self.offsets = torch.arange(4, device=dev, dtype=torch.bfloat16)
        else:  # shifts -2..2 around the GPTQ start code, masked outside the grid
            self.base = torch.randint(0, 1 << bits, (out, inp, 1), generator=gen, device=dev,
                                      dtype=torch.uint8)
            self.offsets = torch.arange(-2, 3, device=dev, dtype=torch.bfloat16)
            self.max_code = (1 << bits) - 1

    def params(self):
        return [self.logits], [self.scales]

    def weight(self, kappa, tau):
        values = self.offsets if self.base is None else self.base.to(torch.bfloat16) + self.offsets
        u = torch.rand_like(self.logits)
        g = -torch.log(-torch.log(u + EPS) + EPS)
        x = (kappa * self.logits + g) / tau
        if self.base is not None:
            x = x.masked_fill((values < 0) | (values > self.max_code), float("-inf"))
        soft = torch.softmax(x, dim=-1)
        q = (soft * values).sum(-1) - self.zero
        w = (q.view(self.out, self.inp // GROUP, GROUP) * self.scales).view(self.out, self.inp)
        return w.to(torch.bfloat16)


class ReplayedGumbel(torch.autograd.Function):
    """The reference's soft weight: logits [K, out, in] (bf16), the softmax over dim 0 of
    (kappa * logits + Gumbel noise) / tau, E[value] (plus the start code at 3 bits) times the
    group's scale. Saves only the logits, the scales and the random state; the backward draws
    the same noise again and forms the gradients by hand."""

    @staticmethod
    def _soft(lin, logits, kappa, tau):
        x = logits if lin.mask is None else logits.masked_fill(~lin.mask, -1e9)
        u = torch.rand_like(x)
        noise = -torch.log(-torch.log(u + EPS) + EPS)
        return torch.softmax((x * kappa + noise) / tau, dim=0)

    @staticmethod
    def forward(ctx, logits, scales, lin, kappa, tau):
        ctx.save_for_backward(logits, scales)
        ctx.lin, ctx.kappa, ctx.tau = lin, kappa, tau
        ctx.rng = torch.cuda.get_rng_state()
        p = ReplayedGumbel._soft(lin, logits, kappa, tau)
        soft = (p * lin.values).sum(0)
        if lin.init is not None:
            soft = lin.init + soft
        return soft * scales[:, lin.idx].to(torch.bfloat16)

    @staticmethod
    def backward(ctx, grad_out):
        logits, scales = ctx.saved_tensors
        lin = ctx.lin
        with torch.random.fork_rng(devices=[logits.device]):
            torch.cuda.set_rng_state(ctx.rng)
            p = ReplayedGumbel._soft(lin, logits, ctx.kappa, ctx.tau)
        soft = (p * lin.values).sum(0)
        if lin.init is not None:
            soft = lin.init + soft
        grad_scales = torch.zeros_like(scales)
        grad_scales.scatter_add_(1, lin.idx.unsqueeze(0).expand_as(grad_out),
                                 (grad_out * soft).float())
        g_level = (grad_out * scales[:, lin.idx].to(torch.bfloat16)).unsqueeze(0) * lin.values
        grad_z = p * (g_level - (g_level * p).sum(0, keepdim=True))
        grad_logits = grad_z * (ctx.kappa / ctx.tau)
        if lin.mask is not None:
            grad_logits = grad_logits.masked_fill(~lin.mask, 0.0).float()
        return grad_logits.to(logits.dtype), grad_scales, None, None, None


class ReferenceLinear:
    """One quantized linear as the reference holds it: logits [K, out, in] in bf16, fp32 scales
    [out, groups]; at 3 bits the start codes (signed grid) and the mask of valid shifts. Also the
    original bf16 weight, from which each microbatch's target is recomputed."""

    def __init__(self, out, inp, bits, gen, dev):
        levels = 4 if bits == 2 else 5
        self.logits = (0.05 * (2 * torch.rand(levels, out, inp, generator=gen, device=dev) - 1)
                       ).to(torch.bfloat16).requires_grad_()
        self.scales = torch.full((out, inp // GROUP), 0.01, device=dev).requires_grad_()
        self.idx = torch.arange(inp, device=dev) // GROUP
        self.w0 = 0.03 * torch.randn(out, inp, generator=gen, device=dev, dtype=torch.bfloat16)
        if bits == 2:  # the grid -2..1 itself
            self.values = torch.arange(-2, 2, device=dev, dtype=torch.bfloat16).view(4, 1, 1)
            self.init, self.mask = None, None
        else:
            lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
            self.values = torch.arange(-2, 3, device=dev, dtype=torch.bfloat16).view(5, 1, 1)
            self.init = torch.randint(lo, hi + 1, (out, inp), generator=gen, device=dev
                                      ).to(torch.bfloat16)
            cand = self.init.unsqueeze(0) + self.values
            self.mask = (cand >= lo) & (cand <= hi)

    def params(self):
        return [self.logits], [self.scales]

    def weight(self, kappa, tau):
        return ReplayedGumbel.apply(self.logits, self.scales, self, kappa, tau)


class Lion:
    """lion-pytorch's update: decoupled decay, sign of the interpolation, then the EMA."""

    def __init__(self, groups, betas=(0.9, 0.95)):
        self.groups = groups
        self.b1, self.b2 = betas
        self.state = {}

    @torch.no_grad()
    def step(self):
        for params, lr, wd in self.groups:
            for p in params:
                if p.grad is None:
                    continue
                m = self.state.setdefault(p, torch.zeros_like(p))
                p.mul_(1 - lr * wd)
                update = m.mul(self.b1).add_(p.grad, alpha=1 - self.b1).sign_()
                p.add_(update, alpha=-lr)
                m.mul_(self.b2).add_(p.grad, alpha=1 - self.b2)

    def zero_grad(self):
        for params, _, _ in self.groups:
            for p in params:
                p.grad = None


def check_replay(dev):
    """The replayed backward against autograd through the same forward (same noise): the
    gradients of the logits and the scales, as a relative max-norm difference (bf16 math)."""
    out = {}
    for bits in (2, 3):
        gen = torch.Generator(device=dev).manual_seed(bits)
        lin = ReferenceLinear(64, 2 * GROUP, bits, gen, dev)
        r = torch.randn(64, 2 * GROUP, generator=gen, device=dev, dtype=torch.bfloat16)
        state = torch.cuda.get_rng_state()
        (lin.weight(150.0, 1.5).float() * r).sum().backward()
        replayed = (lin.logits.grad.float(), lin.scales.grad.clone())
        logits = lin.logits.detach().clone().requires_grad_()
        scales = lin.scales.detach().clone().requires_grad_()
        torch.cuda.set_rng_state(state)
        soft = (ReplayedGumbel._soft(lin, logits, 150.0, 1.5) * lin.values).sum(0)
        if lin.init is not None:
            soft = lin.init + soft
        ((soft * scales[:, lin.idx].to(torch.bfloat16)).float() * r).sum().backward()
        rel = lambda a, b: ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()
        out["bits%d" % bits] = {"logits_rel_diff": rel(replayed[0], logits.grad.float()),
                                "scales_rel_diff": rel(replayed[1], scales.grad)}
    print(json.dumps({"bench": "gsq_loop_reference_check", **out}), flush=True)


def swiglu(x, wg, wu, wd):
    return (torch.nn.functional.silu(x @ wg.T) * (x @ wu.T)) @ wd.T


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--experts", type=int, default=48)
    ap.add_argument("--tokens", type=int, default=5461)
    ap.add_argument("--bits", type=int, default=2)
    ap.add_argument("--objective", default="expert-output",
                    choices=["expert-output", "layer-local"])
    ap.add_argument("--style", choices=["reference", "minimal"])
    ap.add_argument("--microbatches", type=int, default=4)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--check", action="store_true",
                    help="compare the replayed backward with autograd's, then exit")
    a = ap.parse_args()
    if a.check:
        return check_replay("cuda")
    style = a.style or ("reference" if a.objective == "expert-output" else "minimal")
    if style == "reference" and a.objective != "expert-output":
        ap.error("--style reference exists for --objective expert-output only")
    micro = a.microbatches if style == "reference" else 1
    dev = "cuda"
    gen = torch.Generator(device=dev).manual_seed(0)
    kind = ReferenceLinear if style == "reference" else Linear
    experts = [[kind(INTER, HIDDEN, a.bits, gen, dev), kind(INTER, HIDDEN, a.bits, gen, dev),
                kind(HIDDEN, INTER, a.bits, gen, dev)] for _ in range(a.experts)]
    if a.objective == "expert-output":
        xs = [torch.randn(a.tokens, HIDDEN, generator=gen, device=dev, dtype=torch.bfloat16)
              for _ in range(a.experts)]
        if style == "minimal":
            ys = [0.05 * torch.randn(a.tokens, HIDDEN, generator=gen, device=dev,
                                     dtype=torch.bfloat16) for _ in range(a.experts)]
    else:
        w0 = [[0.03 * torch.randn(l.out, l.inp, generator=gen, device=dev, dtype=torch.bfloat16)
               for l in e] for e in experts]
        hs = [(0.01 * torch.randn(HIDDEN, HIDDEN, generator=gen, device=dev, dtype=torch.bfloat16),
               0.01 * torch.randn(INTER, INTER, generator=gen, device=dev, dtype=torch.bfloat16))
              for _ in range(a.experts)]
    logit_params = [p for e in experts for l in e for p in l.params()[0]]
    scale_params = [p for e in experts for l in e for p in l.params()[1]]
    opt = Lion([(logit_params, 2e-4, 1.0), (scale_params, 1e-4, 0.0)])
    per_micro = a.tokens // micro

    def reference_step(kappa, tau):
        for m in range(micro):
            rows = slice(m * per_micro, (m + 1) * per_micro)
            weights = [[l.weight(kappa, tau) for l in e] for e in experts]
            with torch.no_grad():
                target = torch.cat([swiglu(xs[i][rows], *(l.w0 for l in e))
                                    for i, e in enumerate(experts)])
            out = torch.cat([swiglu(xs[i][rows], *weights[i]) for i in range(len(experts))])
            loss = torch.nn.functional.mse_loss(out, target)
            (loss / micro).backward()

    def minimal_step(kappa, tau):
        for i, (gate, up, down) in enumerate(experts):
            wg, wu, wd = gate.weight(kappa, tau), up.weight(kappa, tau), down.weight(kappa, tau)
            if a.objective == "expert-output":
                loss = torch.nn.functional.mse_loss(swiglu(xs[i], wg, wu, wd), ys[i])
            else:
                h_in, h_down = hs[i]
                loss = 0
                for w, ref, h in ((wg, w0[i][0], h_in), (wu, w0[i][1], h_in), (wd, w0[i][2], h_down)):
                    d = w - ref
                    loss = loss + ((d @ h) * d).sum()
            loss.backward()

    step = reference_step if style == "reference" else minimal_step
    times = []
    for s in range(a.warmup + a.steps):
        frac = (s * 64 % 640) / 639.0
        kappa, tau = 100 + 400 * frac, 2.0 - 1.95 * frac
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        step(kappa, tau)
        opt.step()
        opt.zero_grad()
        torch.cuda.synchronize()
        if s >= a.warmup:
            times.append(time.perf_counter() - t0)
    times.sort()
    print(json.dumps({
        "bench": "gsq_loop_reference", "gpu": torch.cuda.get_device_name(), "torch": torch.__version__,
        "style": style, "microbatches": micro,
        "experts": a.experts, "tokens_per_expert": per_micro * micro, "bits": a.bits,
        "objective": a.objective, "timed_steps": a.steps,
        "step_ms": 1e3 * times[len(times) // 2], "step_ms_mean": 1e3 * sum(times) / len(times),
        "peak_gib": torch.cuda.max_memory_allocated() / 2**30}), flush=True)


if __name__ == "__main__":
    main()
