#!/usr/bin/env python3
"""Issue 9's results from the SLQ curve runs (bench/run_slq_curves.sh) and the issue-8 matrix
(uniform rows, bf16): per model a PNG of measured EAR (full and top-10) and KL against average
bits per quantized weight (true bits: codes plus scales and zero points) for SLQ and uniform
bitwidths, GPTQ and GSQ; and markdown tables: SLQ against uniform at equal code bits, the fewest
bits reaching EAR 0.95 / 0.97 / 0.99 and task-lossless, the EAR model's predictions against the
measurements, symmetric against asymmetric.

Usage: bench/slq_curves_tables.py CURVES.jsonl MATRIX.jsonl PNG_PREFIX
(writes PNG_PREFIX-<model>.png; tables on stdout)
"""
import json
import subprocess
import sys


def load(path):
    return [json.loads(line) for line in open(path) if line.strip()]


def kind(row):
    """(model, method, grid, mode, code_bits) of a row; mode: uniform | budget | target | bf16,
    with " all" (scope all) or " per-expert" appended to the grid for those variants."""
    parts = row["config"].split(":")
    model = parts[0]
    if parts[1] == "bf16":
        return model, "bf16", "", "bf16", 16.0
    if "error" in row:
        return model, parts[1], parts[3], "other", 0.0
    method, bits, grid = parts[1], float(parts[2]), parts[3]
    extra = parts[5] if len(parts) > 5 else ""
    flags = extra.replace("--device cuda", "").split()
    if parts[4] == "all":
        grid += " all"
    if "--per-expert-bits" in flags:
        grid += " per-expert"
    if "--slq" not in flags:
        return model, method, grid, "uniform" if not flags else "other", bits
    mode = "target" if "--target-ear" in flags else "budget"
    return model, method, grid, mode, row["slq"]["average_bits"]


def point(row):
    e = row["eval"]
    return {"bits": row["bits_per_param"]["quantized_true"], "ear": e["ear"], "top10": e["ear_top10"],
            "kl": e["kl"], "acc": e["next_token_acc"], "flip": e["flip_rate"], "ppl": e["ppl"],
            "row": row}


def main():
    curves, matrix, prefix = load(sys.argv[1]), load(sys.argv[2]), sys.argv[3]
    for extra in sys.argv[4:]:  # more run files (e.g. the target runs)
        curves += load(extra)
    series = {}  # (model, method, grid, mode) -> [points]
    for row in matrix + curves:
        model, method, grid, mode, code_bits = kind(row)
        if mode == "other":
            continue
        p = point(row)
        p["code_bits"] = code_bits
        series.setdefault((model, method, grid, mode), []).append(p)
    for pts in series.values():
        pts.sort(key=lambda p: p["bits"])
    models = sorted({k[0] for k in series})
    for model in models:
        plot(model, series, f"{prefix}-{model}.png")
        tables(model, series)


def plot(model, series, png):
    labels = [("gptq", "asym", "uniform", "GPTQ uniform"), ("gptq", "asym", "budget", "GPTQ SLQ"),
              ("gptq", "asym", "target", "GPTQ SLQ --target-ear"),
              ("gsq", "asym", "uniform", "GSQ uniform"), ("gsq", "asym", "budget", "GSQ SLQ"),
              ("gptq", "sym", "uniform", "GPTQ uniform sym"), ("gptq", "sym", "budget", "GPTQ SLQ sym"),
              ("gptq", "asym all", "uniform", "GPTQ uniform, scope all"),
              ("gptq", "asym all", "budget", "GPTQ SLQ, scope all"),
              ("gptq", "asym per-expert", "budget", "GPTQ SLQ --per-expert-bits")]
    dats, plots = [], {"ear": [], "top10": [], "kl": []}
    bf16 = series.get((model, "bf16", "", "bf16"))
    for i, (method, grid, mode, label) in enumerate(labels):
        pts = series.get((model, method, grid, mode))
        if not pts:
            continue
        dat = f"{png}.{i}.dat"
        with open(dat, "w") as f:
            for p in pts:
                f.write(f"{p['bits']} {p['ear'][0]} {p['top10'][0]} {p['kl'][0]}\n")
        dats.append(dat)
        style = "linespoints" if mode != "target" else "points"
        for key, col in (("ear", 2), ("top10", 3), ("kl", 4)):
            plots[key].append(f"'{dat}' using 1:{col} with {style} pt {i + 4} ps 1.3 title '{label}'")
    bf16_ear = bf16[0]["ear"][0] if bf16 else None
    bf16_top = bf16[0]["top10"][0] if bf16 else None
    script = f"""
set terminal pngcairo size 1500,500
set output '{png}'
set multiplot layout 1,3 title '{model}: measured against average bits per quantized weight (codes + scales + zeros), kjv\\_val'
set xlabel 'bits per quantized weight'
set key bottom right font ',8'
set grid
set title 'EAR (full vocabulary)'
plot {", ".join(plots['ear'])}{f", {bf16_ear} with lines dt 2 title 'bf16 arithmetic'" if bf16_ear else ''}
set title 'EAR top-10 (lower bound)'
plot {", ".join(plots['top10'])}{f", {bf16_top} with lines dt 2 title 'bf16 arithmetic'" if bf16_top else ''}
set title 'KL(original || quantized)'
set logscale y
set key top right
plot {", ".join(plots['kl'])}
unset multiplot
"""
    subprocess.run(["gnuplot"], input=script, text=True, check=True)
    import os
    for d in dats:
        os.remove(d)


def fmt_iv(x, digits=4):
    return f"{x[0]:.{digits}f} [{x[1]:.{digits}f}, {x[2]:.{digits}f}]"


def tables(model, series):
    print(f"\n### {model}\n")
    print("| quantizer | mode | code bits | bits/weight (true) | EAR | EAR top-10 | KL | ppl | next-token acc | flip rate |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    grids = ("asym", "sym", "asym all", "asym per-expert")
    for method in ("gptq", "gsq"):
        for grid in grids:
            for mode in ("uniform", "budget", "target"):
                for p in series.get((model, method, grid, mode), []):
                    label = {"uniform": "uniform", "budget": "SLQ budget", "target": "SLQ target"}[mode]
                    if mode == "target":
                        label += f" {p['row']['slq']['target_ear']}"
                    print(f"| {method} {grid} | {label} | {p['code_bits']:.3f} | {p['bits']:.3f} | "
                          f"{p['ear'][0]:.4f} | {p['top10'][0]:.4f} | {p['kl'][0]:.4f} | "
                          f"{p['ppl'][0]:.3f} | {p['acc'][0]:.4f} | {p['flip'][0]:.4f} |")
    bf16 = series.get((model, "bf16", "", "bf16"))
    if bf16:
        b = bf16[0]
        print(f"| bf16 arithmetic | | 16 | 16 | {b['ear'][0]:.4f} | {b['top10'][0]:.4f} | "
              f"{b['kl'][0]:.4f} | {b['ppl'][0]:.3f} | {b['acc'][0]:.4f} | {b['flip'][0]:.4f} |")

    # SLQ against uniform at equal code bits.
    print("\nSLQ (budget) against uniform at the same code bits:\n")
    print("| quantizer | code bits | EAR uniform | EAR SLQ | KL uniform | KL SLQ | SLQ better in both |")
    print("|---|---|---|---|---|---|---|")
    for method in ("gptq", "gsq"):
        for grid, base in (("asym", "asym"), ("asym all", "asym all"), ("asym per-expert", "asym")):
            uni = {round(p["code_bits"], 2): p
                   for p in series.get((model, method, base, "uniform"), [])}
            for p in series.get((model, method, grid, "budget"), []):
                u = uni.get(round(p["code_bits"], 2))
                if u is None:
                    continue
                better = p["ear"][1] > u["ear"][2] and p["kl"][2] < u["kl"][1]
                print(f"| {method} {grid} | {p['code_bits']:.0f} | {fmt_iv(u['ear'])} | "
                      f"{fmt_iv(p['ear'])} | {fmt_iv(u['kl'])} | {fmt_iv(p['kl'])} | "
                      f"{'yes' if better else 'no'} |")

    # Fewest bits reaching each EAR, and task-lossless.
    print("\nFewest bits per quantized weight (true) measured to reach:\n")
    print("| quantizer | EAR >= 0.95 | EAR >= 0.97 | EAR >= 0.99 | acc in bf16 interval | acc and top-1 agreement in bf16 interval |")
    print("|---|---|---|---|---|---|")
    for method in ("gptq", "gsq"):
        for family, modes, grid in (("uniform", ("uniform",), "asym"),
                                    ("SLQ", ("budget", "target"), "asym"),
                                    ("SLQ per-expert", ("budget",), "asym per-expert")):
            pts = [p for m in modes for p in series.get((model, method, grid, m), [])]
            if not pts:
                continue
            cells = []
            for thr in (0.95, 0.97, 0.99):
                ok = [p for p in pts if p["ear"][0] >= thr]
                cells.append(f"{min(p['bits'] for p in ok):.3f}" if ok else "not reached")
            if bf16:
                b = bf16[0]
                acc_ok = [p for p in pts if b["acc"][1] <= p["acc"][0] <= b["acc"][2]]
                both = [p for p in acc_ok if 1 - p["flip"][0] >= 1 - b["flip"][2]]
                cells.append(f"{min(p['bits'] for p in acc_ok):.3f}" if acc_ok else "not reached")
                cells.append(f"{min(p['bits'] for p in both):.3f}" if both else "not reached")
            if not bf16:
                cells += ["(no bf16 row)", "(no bf16 row)"]
            print(f"| {method} {family} | " + " | ".join(cells) + " |")

    # The EAR model against measurements.
    print("\nThe solve's predictions against the measurements (SLQ rows):\n")
    print("| quantizer | mode | code bits | predicted KL | measured KL | predicted EAR (c sqrt KL) | "
          "summed-1-EAR prediction | measured EAR | c |")
    print("|---|---|---|---|---|---|---|---|---|")
    for method in ("gptq", "gsq"):
        for grid in grids:
            for mode in ("budget", "target"):
                for p in series.get((model, method, grid, mode), []):
                    q = p["row"]["slq"]
                    m = mode if mode == "budget" else f"target {q['target_ear']}"
                    print(f"| {method} {grid} | {m} | {q['average_bits']:.3f} | {q['predicted_kl']:.4f} | "
                          f"{p['kl'][0]:.4f} | {q['predicted_ear']:.4f} | "
                          f"{q.get('predicted_ear_summed') or float('nan'):.4f} | {p['ear'][0]:.4f} | "
                          f"{q.get('ear_per_root_kl') or float('nan'):.3f} |")


if __name__ == "__main__":
    main()
