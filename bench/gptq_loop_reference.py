#!/usr/bin/env python3
"""GPTQ as the reference code runs it (the GPTQ paper's fasterquant, one linear at a time, a
Python loop over columns inside blocks of 128), for the issue-11 comparison with the worker's
batched GPTQ (worker/quant/gptq_kimi_bench.cc): the same Kimi-K2 expert shapes, synthetic
weights and Hessians from random tokens, 3-bit symmetric, group 128, min/max grid, no act-order,
damp 0.01. The loop is per linear, so it is timed on `experts` experts and its time per expert
scaled to 48 (stated in the output).

Usage: bench/gptq_loop_reference.py [--experts 4] [--tokens 5461]
"""
import argparse
import json
import time

import torch

HIDDEN, INTER, GROUP, BITS = 7168, 2048, 128, 3


def fasterquant(w, h, blocksize=128, percdamp=0.01):
    w = w.clone()
    cols = w.shape[1]
    maxq = 2 ** BITS - 1
    h = h.clone()
    dead = torch.diag(h) == 0
    h[dead, dead] = 1
    w[:, dead] = 0
    damp = percdamp * torch.mean(torch.diag(h))
    h += damp * torch.eye(cols, device=w.device)
    h = torch.linalg.cholesky(h)
    h = torch.cholesky_inverse(h)
    hinv = torch.linalg.cholesky(h, upper=True)
    q_all = torch.zeros_like(w)
    scale = zero = None
    for i1 in range(0, cols, blocksize):
        i2 = min(i1 + blocksize, cols)
        count = i2 - i1
        w1 = w[:, i1:i2].clone()
        q1 = torch.zeros_like(w1)
        err1 = torch.zeros_like(w1)
        hinv1 = hinv[i1:i2, i1:i2]
        for i in range(count):
            col = w1[:, i]
            d = hinv1[i, i]
            if (i1 + i) % GROUP == 0:  # symmetric min/max grid of the next group
                g = w[:, i1 + i:i1 + i + GROUP]
                xmax = torch.maximum(g.abs().amax(1), torch.full_like(g[:, 0], 1e-8))
                scale = 2 * xmax / maxq
                zero = torch.full_like(scale, (maxq + 1) / 2)
            q = torch.clamp(torch.round(col / scale) + zero, 0, maxq)
            deq = scale * (q - zero)
            q1[:, i] = deq
            err = (col - deq) / d
            w1[:, i:] -= err.unsqueeze(1).matmul(hinv1[i, i:].unsqueeze(0))
            err1[:, i] = err
        q_all[:, i1:i2] = q1
        w[:, i2:] -= err1.matmul(hinv[i1:i2, i2:])
    return q_all


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--experts", type=int, default=4)
    ap.add_argument("--tokens", type=int, default=5461)
    a = ap.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    dev = "cuda"
    torch.manual_seed(1)
    x = torch.randn(a.tokens, HIDDEN, device=dev)
    fasterquant(torch.randn(INTER, INTER, device=dev) * 0.02,
                torch.eye(INTER, device=dev))  # warm-up (handles, kernels)
    torch.cuda.synchronize()
    seconds = 0.0
    for _ in range(a.experts):
        x = torch.randn(a.tokens, HIDDEN, device=dev)
        h_in = x.t() @ x * (2.0 / a.tokens)
        xd = torch.randn(a.tokens, INTER, device=dev)
        h_down = xd.t() @ xd * (2.0 / a.tokens)
        ws = [(torch.randn(INTER, HIDDEN, device=dev) * 0.02, h_in),
              (torch.randn(INTER, HIDDEN, device=dev) * 0.02, h_in),
              (torch.randn(HIDDEN, INTER, device=dev) * 0.02, h_down)]
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for w, h in ws:
            fasterquant(w, h)
        torch.cuda.synchronize()
        seconds += time.perf_counter() - t0
    per_expert = seconds / a.experts
    print(json.dumps({"bench": "gptq_loop_reference", "gpu": torch.cuda.get_device_name(),
                      "torch": torch.__version__, "experts_timed": a.experts,
                      "seconds_per_expert": per_expert, "projected_48_experts_s": 48 * per_expert}),
          flush=True)


if __name__ == "__main__":
    main()
