#!/usr/bin/env python3
"""Markdown tables from bench/quantize_matrix.py's JSON lines (the last row per config wins).

Usage: bench/quantize_tables.py RESULTS.jsonl
"""
import json
import sys


def fmt(iv, digits):
    if iv is None:
        return ""
    return f"{iv[0]:.{digits}f} [{iv[1]:.{digits}f}, {iv[2]:.{digits}f}]"


def main():
    rows = {}
    for line in open(sys.argv[1]):
        r = json.loads(line)
        rows[r["config"]] = r
    print("| config | bits/param (quantized true / stored; checkpoint true) | ppl | KL | EAR |"
          " EAR_top10 | flip rate | total s |")
    print("|---|---|---|---|---|---|---|---|")
    for cfg, r in rows.items():
        b = r["bits_per_param"]
        e = r["eval"] or {}
        bits = (f"{b.get('quantized_true', 0):.3f} / {b.get('quantized_stored', 0):.3f}; "
                f"{b.get('checkpoint_true', 0):.3f}")
        print(f"| `{cfg}` | {bits} | {fmt(e.get('ppl'), 3)} | {fmt(e.get('kl'), 4)} | "
              f"{fmt(e.get('ear'), 4)} | {fmt(e.get('ear_top10'), 4)} | "
              f"{fmt(e.get('flip_rate'), 4)} | {r['seconds']:.0f} |")
    print()
    print("| config | " + " | ".join(["calibrate", "gptq/rtn", "gsq", "propagate", "write",
                                      "eval"]) + " | peak RSS MiB |")
    print("|---|---|---|---|---|---|---|---|")
    for cfg, r in rows.items():
        if "phases" not in r:
            continue
        ph = {p["phase"]: p for p in r["phases"]}
        cells = []
        for name in ("calibrate", "gptq", "gsq", "propagate", "write", "eval"):
            p = ph.get(name) or (ph.get("rtn") if name == "gptq" else None)
            cells.append(f"{p['seconds']:.1f}" if p else "")
        peak = max(p["peak_rss_bytes"] for p in r["phases"]) / 2**20
        print(f"| `{cfg}` | " + " | ".join(cells) + f" | {peak:.0f} |")


if __name__ == "__main__":
    main()
