#!/usr/bin/env python3
"""Tied units at exactly uniform's bits, measured (issue 9): every allocation of a tied-unit
probe table whose average code bits equal BITS exactly (gate_up units weigh two down_proj units),
the K with the lowest predicted KL and K more drawn at random, each quantized for real
(`qctl quantize --slq --slq-allocation`) and evaluated, next to uniform BITS in the same run. If
no allocation at uniform's bits beats uniform when measured, SLQ picking uniform there is the
right answer, not a miss of the probes.

Usage: bench/slq_tied_equal_bits.py MODEL PROBES.json BITS K OUT.jsonl [qctl flags...]
"""
import itertools
import json
import os
import random
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QCTL = os.environ.get("QCTL", os.path.join(ROOT, "build", "coordinator", "qctl", "qctl"))
SHARED = os.environ.get("QUANT_SHARED") or os.path.normpath(os.path.join(ROOT, "..", "shared"))


def run(model, out_dir, extra):
    cmd = [QCTL, "quantize", "--model", os.path.join(SHARED, "models", model), "--out", out_dir,
           "--method", "gptq", "--grid", "asym", "--overwrite"] + extra
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError("qctl failed (%d): %s" % (done.returncode, done.stderr.strip()[-2000:]))
    return json.load(open(os.path.join(out_dir, "report.json")))


def main():
    model, probes_path, bits, k, out_path = sys.argv[1:6]
    bits, k = int(bits), int(k)
    extra = sys.argv[6:]
    probes = json.load(open(probes_path))["probes"]
    units = sorted(probes)
    weight = {u: 2 if "gate_up" in u else 1 for u in units}
    total = sum(weight.values())
    widths = sorted({int(b) for u in units for b in probes[u]})
    equal = []
    for combo in itertools.product(widths, repeat=len(units)):
        if sum(weight[u] * b for u, b in zip(units, combo)) != bits * total:
            continue
        if all(b == bits for b in combo):
            continue
        kl = sum(probes[u][str(b)]["kl"] for u, b in zip(units, combo))
        equal.append((kl, combo))
    equal.sort()
    rng = random.Random(1)
    rest = equal[k:]
    chosen = equal[:k] + rng.sample(rest, min(k, len(rest)))
    uniform_kl = sum(probes[u][str(bits)]["kl"] for u in units)
    print(f"{len(equal)} allocations at exactly {bits} bits besides uniform; predicted KL: uniform "
          f"{uniform_kl:.5f}, best {equal[0][0]:.5f}", flush=True)
    with tempfile.TemporaryDirectory() as tmp, open(out_path, "a") as f:
        rows = [("uniform", uniform_kl, None)] + [("mixed", kl, c) for kl, c in chosen]
        for kind, predicted, combo in rows:
            flags = ["--bits", str(bits)] + extra
            alloc = None
            if combo is not None:
                alloc = dict(zip(units, combo))
                path = os.path.join(tmp, "alloc.json")
                json.dump(alloc, open(path, "w"))
                flags = ["--slq", "--bits", str(bits), "--slq-allocation", path] + extra
            rep = run(model, os.path.join(tmp, "out"), flags)
            ev = rep["eval"]
            row = {"model": model, "bits": bits, "kind": kind, "allocation": alloc,
                   "predicted_kl": predicted, "kl": ev["kl"], "ear": ev["ear"],
                   "bits_per_param": rep.get("bits_per_param")}
            f.write(json.dumps(row) + "\n")
            f.flush()
            print(kind, combo, "predicted KL %.5f" % predicted,
                  "KL %.5f [%.5f, %.5f]" % tuple(ev["kl"]),
                  "EAR %.4f [%.4f, %.4f]" % tuple(ev["ear"]), flush=True)


if __name__ == "__main__":
    main()
