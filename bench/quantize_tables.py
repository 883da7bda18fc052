#!/usr/bin/env python3
"""Markdown tables from bench/quantize_matrix.py's JSON lines (the last row per config wins).

Prints, per model, the quality table (bf16, then RTN/GPTQ/GSQ by scope, grid and bits), the
ordering check the issue asks for (GSQ < GPTQ < RTN in ppl and KL at 2 and 3 bits), GSQ's two
objectives side by side, and the time and peak memory of every phase.
Usage: bench/quantize_tables.py RESULTS.jsonl
"""
import json
import sys

METHODS = {"bf16": 0, "rtn": 1, "gptq": 2, "gsq": 3}


def fmt(iv, digits):
    if iv is None:
        return ""
    return f"{iv[0]:.{digits}f} [{iv[1]:.{digits}f}, {iv[2]:.{digits}f}]"


def parse(cfg):
    p = cfg.split(":")
    if p[1] == "bf16":
        return {"model": p[0], "method": "bf16", "bits": 16, "grid": "", "scope": "", "extra": ""}
    return {"model": p[0], "method": p[1], "bits": int(p[2]), "grid": p[3], "scope": p[4],
            "extra": p[5] if len(p) > 5 else ""}


def order(item):
    c = parse(item[0])
    return (c["model"], c["method"] != "bf16", c["extra"] != "", c["scope"] != "experts",
            c["grid"], c["bits"], METHODS[c["method"]], c["extra"])


def main():
    rows = {}
    for line in open(sys.argv[1]):
        r = json.loads(line)
        rows[r["config"]] = r
    items = sorted(rows.items(), key=order)
    models = sorted({parse(c)["model"] for c in rows})
    for model in models:
        print(f"**{model}**\n")
        print("| config | bits/param: quantized true / stored; checkpoint true | ppl | KL | EAR |"
              " EAR_top10 | flip rate | next-token acc |")
        print("|---|---|---|---|---|---|---|---|")
        for cfg, r in items:
            if parse(cfg)["model"] != model:
                continue
            b = r["bits_per_param"]
            e = r["eval"] or {}
            bits = (f"{b.get('quantized_true', 0):.3f} / {b.get('quantized_stored', 0):.3f}; "
                    f"{b.get('checkpoint_true', 0):.3f}")
            print(f"| `{cfg}` | {bits} | {fmt(e.get('ppl'), 3)} | {fmt(e.get('kl'), 4)} | "
                  f"{fmt(e.get('ear'), 4)} | {fmt(e.get('ear_top10'), 4)} | "
                  f"{fmt(e.get('flip_rate'), 4)} | {fmt(e.get('next_token_acc'), 4)} |")
        print()

    print("Ordering check (scope experts, g128): GSQ < GPTQ < RTN in perplexity and in KL.\n")
    print("| model | grid | bits | RTN ppl / KL | GPTQ ppl / KL | GSQ ppl / KL | holds |")
    print("|---|---|---|---|---|---|---|")
    for model in models:
        for grid in ("sym", "asym"):
            for bits in (2, 3, 4):
                got = {m: rows.get(f"{model}:{m}:{bits}:{grid}:experts") for m in
                       ("rtn", "gptq", "gsq")}
                if not all(got.values()):
                    continue
                v = {m: (got[m]["eval"]["ppl"][0], got[m]["eval"]["kl"][0]) for m in got}
                holds = all(v["gsq"][i] < v["gptq"][i] < v["rtn"][i] for i in (0, 1))
                cells = " | ".join(f"{v[m][0]:.3f} / {v[m][1]:.4f}" for m in ("rtn", "gptq", "gsq"))
                print(f"| {model} | {grid} | {bits} | {cells} | {'yes' if holds else '**no**'} |")
    print()

    print("GSQ objectives side by side (3 bits, sym, experts, 640 steps):\n")
    print("| model | objective | ppl | KL | EAR | GSQ phase s | codes changed |")
    print("|---|---|---|---|---|---|---|")
    for model in models:
        for name, cfg in (("expert-output", f"{model}:gsq:3:sym:experts"),
                          ("layer-local", f"{model}:gsq:3:sym:experts:--objective layer-local")):
            r = rows.get(cfg)
            if not r:
                continue
            ph = {p["phase"]: p for p in r["phases"]}
            e = r["eval"]
            print(f"| {model} | {name} | {e['ppl'][0]:.3f} | {e['kl'][0]:.4f} | {e['ear'][0]:.4f}"
                  f" | {ph['gsq']['seconds']:.0f} | {r.get('gsq_changed_fraction', 0):.3f} |")
    print()

    print("Time (s) and peak RSS (MiB) per phase:\n")
    print("| config | " + " | ".join(["calibrate", "gptq/rtn", "gsq", "propagate", "write",
                                      "eval"]) + " | total | peak RSS MiB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for cfg, r in items:
        if "phases" not in r:
            continue
        ph = {p["phase"]: p for p in r["phases"]}
        cells = []
        for name in ("calibrate", "gptq", "gsq", "propagate", "write", "eval"):
            p = ph.get(name) or (ph.get("rtn") if name == "gptq" else None)
            cells.append(f"{p['seconds']:.1f} ({p['peak_rss_bytes'] / 2**20:.0f})" if p else "")
        peak = max(p["peak_rss_bytes"] for p in r["phases"]) / 2**20
        print(f"| `{cfg}` | " + " | ".join(cells) + f" | {r['seconds']:.0f} | {peak:.0f} |")


if __name__ == "__main__":
    main()
