#!/usr/bin/env python3
"""SLQ additivity check (issue 9, item 2): random mixed allocations quantized for real, the
sum of the units' probe scores (predicted) against the evaluation of the written checkpoint
(measured), for KL and for 1 - EAR; Spearman rank correlations; a gnuplot scatter (PNG).

Usage: bench/slq_additivity.py MODEL OUT.jsonl PNG [N] [SEED] [extra qctl flags...]
Every run uses the same probe cache (filled by the first run), so only the first probes.
"""
import json
import os
import random
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QCTL = os.environ.get("QCTL", os.path.join(ROOT, "build", "coordinator", "qctl", "qctl"))
SHARED = os.path.normpath(os.path.join(ROOT, "..", "shared"))


def ranks(xs):
    order = sorted(range(len(xs)), key=lambda i: xs[i])
    r = [0.0] * len(xs)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and xs[order[j + 1]] == xs[order[i]]:
            j += 1
        for k in range(i, j + 1):
            r[order[k]] = (i + j) / 2.0
        i = j + 1
    return r


def spearman(a, b):
    ra, rb = ranks(a), ranks(b)
    n = len(a)
    ma, mb = sum(ra) / n, sum(rb) / n
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb))
    va = sum((x - ma) ** 2 for x in ra) ** 0.5
    vb = sum((y - mb) ** 2 for y in rb) ** 0.5
    return cov / (va * vb) if va > 0 and vb > 0 else float("nan")


def quantize(model, out_dir, cache, extra, allocation=None, evaluate=True):
    cmd = [QCTL, "quantize", "--model", os.path.join(SHARED, "models", model), "--out", out_dir,
           "--method", "gptq", "--grid", "asym", "--slq", "--bits", "4", "--probe-cache", cache,
           "--overwrite"] + extra
    if allocation:
        cmd += ["--slq-allocation", allocation]
    if not evaluate:
        cmd += ["--no-eval"]
    env = dict(os.environ, OPENBLAS_NUM_THREADS="2")
    subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    return cmd, json.load(open(os.path.join(out_dir, "report.json")))


def main():
    model, out_path, png = sys.argv[1:4]
    n = int(sys.argv[4]) if len(sys.argv) > 4 else 20
    seed = int(sys.argv[5]) if len(sys.argv) > 5 else 1
    extra = sys.argv[6:]
    rng = random.Random(seed)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        cache = os.path.join(tmp, "cache")
        _, first = quantize(model, os.path.join(tmp, "probe"), cache, extra, evaluate=False)
        probes = first["slq"]["probes"]
        units = sorted(probes)
        with open(out_path, "a") as f:
            for i in range(n):
                alloc = {u: rng.choice(sorted(int(b) for b in probes[u])) for u in units}
                path = os.path.join(tmp, f"alloc{i}.json")
                json.dump(alloc, open(path, "w"))
                cmd, rep = quantize(model, os.path.join(tmp, "out"), cache, extra, path)
                pred_kl = sum(probes[u][str(b)]["kl"] for u, b in alloc.items())
                pred_ear = sum(probes[u][str(b)]["ear_loss"] for u, b in alloc.items())
                ev = rep["eval"]
                row = {"model": model, "seed": seed, "index": i, "allocation": alloc,
                       "average_code_bits": rep["slq"]["average_bits"],
                       "predicted_kl": pred_kl, "measured_kl": ev["kl"][0],
                       "predicted_ear_loss": pred_ear, "measured_ear_loss": 1 - ev["ear"][0],
                       "command": " ".join(cmd).replace(tmp, "TMP").replace(ROOT + "/", "")}
                rows.append(row)
                f.write(json.dumps(row) + "\n")
                f.flush()
                print(i, "bits %.3f" % row["average_code_bits"], "KL pred %.4f meas %.4f" %
                      (pred_kl, row["measured_kl"]), "1-EAR pred %.4f meas %.4f" %
                      (pred_ear, row["measured_ear_loss"]), flush=True)
    rho_kl = spearman([r["predicted_kl"] for r in rows], [r["measured_kl"] for r in rows])
    rho_ear = spearman([r["predicted_ear_loss"] for r in rows],
                       [r["measured_ear_loss"] for r in rows])
    print(json.dumps({"model": model, "n": len(rows), "spearman_kl": rho_kl,
                      "spearman_ear_loss": rho_ear}))
    dat = png + ".dat"
    with open(dat, "w") as f:
        for r in rows:
            f.write(f"{r['predicted_kl']} {r['measured_kl']} {r['predicted_ear_loss']} "
                    f"{r['measured_ear_loss']}\n")
    script = f"""
set terminal pngcairo size 1100,500
set output '{png}'
set multiplot layout 1,2 title '{model}: SLQ additivity, {len(rows)} random allocations (GPTQ asym)'
set xlabel 'predicted KL (sum of unit probes)'
set ylabel 'measured KL (kjv\\_val)'
set title sprintf('KL, Spearman %.3f', {rho_kl})
f(x) = x
plot '{dat}' using 1:2 with points pt 7 notitle, f(x) with lines dt 2 title 'y = x'
set xlabel 'predicted 1 - EAR (sum of unit probes)'
set ylabel 'measured 1 - EAR (kjv\\_val)'
set title sprintf('1 - EAR, Spearman %.3f', {rho_ear})
plot '{dat}' using 3:4 with points pt 7 notitle, f(x) with lines dt 2 title 'y = x'
unset multiplot
"""
    subprocess.run(["gnuplot"], input=script, text=True, check=True)
    os.remove(dat)


if __name__ == "__main__":
    main()
