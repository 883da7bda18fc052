#!/usr/bin/env python3
"""The GSQ step as the reference code runs it, for the issue-11 comparison: a plain per-expert
PyTorch loop on one GPU's share of a Kimi-K2 MoE layer (experts of gate/up 2048x7168 and down
7168x2048, group 128), bf16 logits [out, in, K] as parameters, Gumbel noise from torch.rand,
softmax over the levels, the expected weight times the per-group fp32 scales, the expert's
forward and backward by autograd, then Lion (lion-pytorch's update) over every parameter with the
reference's two groups. Weights and routed tokens are synthetic, as in kernels/gsq_kimi_bench.cu.

Usage: bench/gsq_loop_reference.py [--experts 48] [--tokens 5461] [--bits 2|3]
                                   [--objective expert-output|layer-local] [--steps 50]
Prints one JSON line: median and mean step time over the timed steps, peak GPU memory.
"""
import argparse
import json
import time

import torch

HIDDEN, INTER, GROUP = 7168, 2048, 128
EPS = 1e-8


class Linear:
    """One quantized linear of one expert: logits over the levels, scales per group."""

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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--experts", type=int, default=48)
    ap.add_argument("--tokens", type=int, default=5461)
    ap.add_argument("--bits", type=int, default=2)
    ap.add_argument("--objective", default="expert-output",
                    choices=["expert-output", "layer-local"])
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=3)
    a = ap.parse_args()
    dev = "cuda"
    gen = torch.Generator(device=dev).manual_seed(0)
    experts = []
    for _ in range(a.experts):
        experts.append([Linear(INTER, HIDDEN, a.bits, gen, dev), Linear(INTER, HIDDEN, a.bits, gen, dev),
                        Linear(HIDDEN, INTER, a.bits, gen, dev)])
    if a.objective == "expert-output":
        xs = [torch.randn(a.tokens, HIDDEN, generator=gen, device=dev, dtype=torch.bfloat16)
              for _ in range(a.experts)]
        ys = [0.05 * torch.randn(a.tokens, HIDDEN, generator=gen, device=dev,
                                 dtype=torch.bfloat16) for _ in range(a.experts)]
    else:
        w0 = [[0.03 * torch.randn(l.out, l.inp, generator=gen, device=dev, dtype=torch.bfloat16)
               for l in e] for e in experts]
        hs = [(0.01 * torch.randn(HIDDEN, HIDDEN, generator=gen, device=dev, dtype=torch.bfloat16),
               0.01 * torch.randn(INTER, INTER, generator=gen, device=dev, dtype=torch.bfloat16))
              for _ in range(a.experts)]
    opt = Lion([([l.logits for e in experts for l in e], 2e-4, 1.0),
                ([l.scales for e in experts for l in e], 1e-4, 0.0)])
    times = []
    for s in range(a.warmup + a.steps):
        frac = (s * 64 % 640) / 639.0
        kappa, tau = 100 + 400 * frac, 2.0 - 1.95 * frac
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for i, (gate, up, down) in enumerate(experts):
            wg, wu, wd = gate.weight(kappa, tau), up.weight(kappa, tau), down.weight(kappa, tau)
            if a.objective == "expert-output":
                x = xs[i]
                y = (torch.nn.functional.silu(x @ wg.T) * (x @ wu.T)) @ wd.T
                loss = torch.nn.functional.mse_loss(y, ys[i])
            else:
                h_in, h_down = hs[i]
                loss = 0
                for w, ref, h in ((wg, w0[i][0], h_in), (wu, w0[i][1], h_in), (wd, w0[i][2], h_down)):
                    d = w - ref
                    loss = loss + ((d @ h) * d).sum()
            loss.backward()
        opt.step()
        opt.zero_grad()
        torch.cuda.synchronize()
        if s >= a.warmup:
            times.append(time.perf_counter() - t0)
    times.sort()
    print(json.dumps({
        "bench": "gsq_loop_reference", "gpu": torch.cuda.get_device_name(), "torch": torch.__version__,
        "experts": a.experts, "tokens_per_expert": a.tokens, "bits": a.bits,
        "objective": a.objective, "timed_steps": a.steps,
        "step_ms": 1e3 * times[len(times) // 2], "step_ms_mean": 1e3 * sum(times) / len(times),
        "peak_gib": torch.cuda.max_memory_allocated() / 2**30}), flush=True)


if __name__ == "__main__":
    main()
