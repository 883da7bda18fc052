#!/usr/bin/env python3
"""Per-expert SLQ with the per-layer calibration (issue 9), from the GPU run's files
(scripts/gpu-slq-per-layer.sh):
1. additivity: for each expert model (sum, scale, power; job/slq_expert_model.h, the
   same formulas re-implemented here), predicted KL and 1 - EAR of every random per-expert
   allocation against the measured ones: Spearman, measured/predicted range; a gnuplot scatter;
2. SLQ against uniform at equal code bits: unpaired 95% intervals (as the job reports them)
   and a paired bootstrap of the difference over the same evaluation windows.

Usage: bench/slq_per_layer.py MATRIX.jsonl PNG_PREFIX [MODEL ADDITIVITY.jsonl PROBES.json]...
MATRIX.jsonl: the gpu-slq-per-layer.sh rows (quantize_matrix.py); PROBES.json: the probe table
slq_per_expert_additivity.py wrote (OUT.probes.json); the scatter goes to PNG_PREFIX-MODEL.png.
"""
import json
import math
import os
import random
import subprocess
import sys

from slq_additivity import spearman  # rank correlation, shared with the tied-unit check

EAR_MARGIN = 1.1  # job/slq_files.h kEarMargin


def tied_of(unit):
    """model.layers.3.mlp.experts.7.gate_up -> model.layers.3.mlp.experts.gate_up, else None."""
    marker = ".mlp.experts."
    at = unit.find(marker)
    if at < 0:
        return None
    rest = unit[at + len(marker):]
    head, _, tail = rest.partition(".")
    if not head.isdigit() or not tail:
        return None
    return unit[:at + len(marker)] + tail


class Model:
    """The probe table of one model: per-expert units, their groups and the tied probes."""

    def __init__(self, probes, units, quantity):
        # quantity: "kl" or "ear2" (squared 1 - EAR)
        def q(p):
            return max(0.0, p["kl"]) if quantity == "kl" else p["ear_loss"] ** 2
        self.loss = {u: {int(b): q(p) for b, p in probes[u].items()} for u in units}
        self.groups = {}
        for u in units:
            t = tied_of(u)
            if t is not None and t in probes:
                self.groups.setdefault(t, []).append(u)
        self.tied = {t: {int(b): q(p) for b, p in probes[t].items()} for t in self.groups}
        self.fit = {t: self.fit_power(t) for t in self.groups}

    def fit_power(self, t):
        pts = []
        for b, tb in self.tied[t].items():
            s = [self.loss[u][b] for u in self.groups[t]]
            if tb > 0 and sum(s) > 0:
                pts.append((math.log(tb), s))
        best = (float("inf"), 1.0)
        for step in range(0, 376):
            r = 0.25 + 0.01 * step
            err = sum((lt - math.log(sum(x ** r for x in s)) / r) ** 2 for lt, s in pts)
            if err < best[0]:
                best = (err, r)
        return best[1]

    def scale(self, t, b):
        s = sum(self.loss[u][b] for u in self.groups[t])
        tb = self.tied[t].get(b)
        return tb / s if tb and s > 0 else 1.0

    def predict(self, alloc, model):
        grouped = {u for us in self.groups.values() for u in us}
        total = sum(self.loss[u][b] for u, b in alloc.items() if model == "sum" or u not in grouped)
        if model == "sum":
            return total
        for t, us in self.groups.items():
            if model == "scale":
                total += sum(self.scale(t, alloc[u]) * self.loss[u][alloc[u]] for u in us)
            else:
                r = self.fit[t]
                total += sum(self.loss[u][alloc[u]] ** r for u in us) ** (1 / r)
        return total


def paired(a, b, samples=1000, seed=0x5eed):
    """Paired bootstrap over windows of b - a for KL and EAR (ratio of sums): value, lo, hi."""
    wa, wb = a["eval_windows"], b["eval_windows"]
    n = len(wa["positions"])
    rng = random.Random(seed)

    def diff(idx):
        pos = sum(wa["positions"][i] for i in idx)
        kl = (sum(wb["kl_sum"][i] for i in idx) - sum(wa["kl_sum"][i] for i in idx)) / pos
        ear = (sum(wb["ear_sum"][i] for i in idx) - sum(wa["ear_sum"][i] for i in idx)) / pos
        return kl, ear

    full = diff(range(n))
    boots = [diff([rng.randrange(n) for _ in range(n)]) for _ in range(samples)]
    out = []
    for k in range(2):
        v = sorted(x[k] for x in boots)
        out.append((full[k], v[int(0.025 * samples)], v[int(0.975 * samples) - 1]))
    return out  # [(dKL, lo, hi), (dEAR, lo, hi)]


def additivity(model_name, path, probes_path, png_prefix):
    pj = json.load(open(probes_path))
    rows = [json.loads(line) for line in open(path)]
    kl_m = Model(pj["probes"], pj["units"], "kl")
    ear_m = Model(pj["probes"], pj["units"], "ear2")
    print(f"\n## {model_name}: per-layer fits (exponent r for KL and for squared 1-EAR)")
    for t in sorted(kl_m.groups):
        ratio = {b: (sum(kl_m.loss[u][b] for u in kl_m.groups[t]) / kl_m.tied[t][b])
                 for b in sorted(kl_m.tied[t]) if kl_m.tied[t][b] > 0}
        print(f"{t}: KL r {kl_m.fit[t]:.2f}; ear2 r {ear_m.fit[t]:.2f}; sum/tied KL by bits " +
              " ".join(f"{b}:{x:.2f}" for b, x in ratio.items()))
    if not rows:
        return None
    result = {}
    print(f"\n{model_name}: {len(rows)} random per-expert allocations")
    print("| expert model | Spearman KL | measured/predicted KL | Spearman 1-EAR | measured/predicted 1-EAR |")
    print("|---|---|---|---|---|")
    dat = f"{png_prefix}-{model_name}.dat"
    cols = []
    for name in ("sum", "scale", "power"):
        pk = [kl_m.predict(r["allocation"], name) for r in rows]
        pe = [EAR_MARGIN * math.sqrt(ear_m.predict(r["allocation"], name)) for r in rows]
        mk = [r["measured_kl"] for r in rows]
        me = [r["measured_ear_loss"] for r in rows]
        rk, re_ = spearman(pk, mk), spearman(pe, me)
        qk = sorted(m / p for m, p in zip(mk, pk))
        qe = sorted(m / p for m, p in zip(me, pe))
        print(f"| {name} | {rk:.3f} | {qk[0]:.2f}-{qk[-1]:.2f} | {re_:.3f} | {qe[0]:.2f}-{qe[-1]:.2f} |")
        result[name] = {"spearman_kl": rk, "spearman_ear": re_, "kl_ratio": [qk[0], qk[-1]],
                        "ear_ratio": [qe[0], qe[-1]]}
        cols.append((pk, mk, pe, me))
    for r in rows:  # the job's own prediction must match the re-implementation
        if r.get("expert_aggregation"):
            mine = kl_m.predict(r["allocation"], r["expert_aggregation"])
            assert abs(mine - r["predicted_kl_job"]) <= 1e-9 + 1e-6 * abs(mine), (mine, r)
    with open(dat, "w") as f:
        for i in range(len(rows)):
            f.write(" ".join(f"{c[k][i]}" for c in cols for k in range(4)) + "\n")
    def title(label, name, key):
        return f"{label} {result[name][key]:.3f}"
    script = f"""
set terminal pngcairo size 1100,500
set output '{png_prefix}-{model_name}.png'
set multiplot layout 1,2 title '{model_name}: per-expert SLQ additivity, {len(rows)} random allocations (GPTQ asym)'
set key left top
f(x) = x
set xlabel 'predicted KL'
set ylabel 'measured KL (kjv\\_val)'
plot '{dat}' using 1:2 with points pt 7 title '{title('sum of probes, Spearman', 'sum', 'spearman_kl')}', \\
     '{dat}' using 5:6 with points pt 5 title '{title('scale', 'scale', 'spearman_kl')}', \\
     '{dat}' using 9:10 with points pt 9 title '{title('power', 'power', 'spearman_kl')}', \\
     f(x) with lines dt 2 title 'y = x'
set xlabel 'predicted 1 - EAR (1.1 sqrt(sum of squares))'
set ylabel 'measured 1 - EAR (kjv\\_val)'
plot '{dat}' using 3:4 with points pt 7 title '{title('sum, Spearman', 'sum', 'spearman_ear')}', \\
     '{dat}' using 7:8 with points pt 5 title '{title('scale', 'scale', 'spearman_ear')}', \\
     '{dat}' using 11:12 with points pt 9 title '{title('power', 'power', 'spearman_ear')}', \\
     f(x) with lines dt 2 title 'y = x'
unset multiplot
"""
    subprocess.run(["gnuplot"], input=script, text=True, check=True)
    os.remove(dat)
    return result


def versus_uniform(matrix):
    rows = [json.loads(line) for line in open(matrix)]
    uniform = {}
    for r in rows:
        model, method, bits, grid, scope = r["config"].split(":")[:5]
        if "--slq" not in r["config"] and r.get("eval"):
            uniform[(model, bits)] = r
    print("\n| model | code bits | expert model | bits/weight | EAR uniform | EAR SLQ | KL uniform | "
          "KL SLQ | predicted KL (summed) | paired dEAR [95%] | paired dKL [95%] | better in both |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    iv = lambda x, f: f"{x[0]:{f}} [{x[1]:{f}}, {x[2]:{f}}]"
    for r in rows:
        if "--slq" not in r["config"] or not r.get("eval"):
            continue
        model, _, bits = r["config"].split(":")[:3]
        u = uniform.get((model, bits))
        if u is None:
            continue
        s = r["slq"]
        (dk, dkl, dkh), (de, del_, deh) = paired(u, r)
        both = "yes" if (dkh < 0 and del_ > 0) else "no"
        print(f"| {model} | {bits} | {s.get('expert_aggregation')} | "
              f"{r['bits_per_param']['quantized_true']:.3f} | {iv(u['eval']['ear'], '.4f')} | "
              f"{iv(r['eval']['ear'], '.4f')} | {iv(u['eval']['kl'], '.4f')} | "
              f"{iv(r['eval']['kl'], '.4f')} | {s['predicted_kl']:.4f} ({s.get('predicted_kl_summed', 0):.4f}) | "
              f"{de:+.4f} [{del_:+.4f}, {deh:+.4f}] | {dk:+.5f} [{dkl:+.5f}, {dkh:+.5f}] | {both} |")


def main():
    matrix, png_prefix = sys.argv[1:3]
    rest = sys.argv[3:]
    for i in range(0, len(rest) - 2, 3):
        additivity(rest[i], rest[i + 1], rest[i + 2], png_prefix)
    versus_uniform(matrix)


if __name__ == "__main__":
    main()
