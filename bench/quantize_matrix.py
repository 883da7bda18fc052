#!/usr/bin/env python3
"""Runs `qctl quantize` over a matrix of configurations and records one JSON line per run.

Each line holds the command, the bits per parameter, the evaluation against the original
(ppl, KL, EAR, EAR_top10, flip rate, accuracy with 95% intervals) and the time and peak RSS of
every phase, all read from the run's report.json. Usage:
  bench/quantize_matrix.py OUT.jsonl CONFIG [CONFIG ...]
where CONFIG is "model:method:bits:grid:scope[:extra flags]", e.g.
  tiny-qwen3-moe:gsq:3:sym:experts:--steps 640
A row "model:bf16" evaluates the original in bf16 compute instead.
"""
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QCTL = os.environ.get("QCTL", os.path.join(ROOT, "build", "coordinator", "qctl", "qctl"))
# QUANT_SHARED: the shared models and data (the GPU machine carries a copy in .gpu-data).
SHARED = os.environ.get("QUANT_SHARED") or os.path.normpath(os.path.join(ROOT, "..", "shared"))


def Relative(command):
    """The command as typed from the repository root (../shared beside it)."""
    return command.replace(ROOT + "/", "").replace(SHARED, "../shared")


def run(config):
    parts = config.split(":")
    model = os.path.join(SHARED, "models", parts[0])
    env = dict(os.environ, OPENBLAS_NUM_THREADS="2")
    if parts[1] == "bf16":
        cmd = [QCTL, "eval", "--model", model, "--reference", model, "--compute", "bf16", "--json"]
        t0 = time.time()
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
        j = json.loads(out)
        ev = {k: [j[k]["value"], j[k]["lo"], j[k]["hi"]]
              for k in ("ppl", "kl", "ear", "ear_top10", "flip_rate", "next_token_acc")}
        return {"config": config, "command": Relative(" ".join(cmd)), "eval": ev,
                "bits_per_param": {"quantized_true": 16, "checkpoint_true": 16},
                "seconds": time.time() - t0}
    method, bits, grid, scope = parts[1:5]
    extra = shlex.split(parts[5]) if len(parts) > 5 else []
    with tempfile.TemporaryDirectory() as tmp:
        out_dir = os.path.join(tmp, "out")
        cmd = [QCTL, "quantize", "--model", model, "--out", out_dir, "--method", method,
               "--bits", bits, "--grid", grid, "--scope", scope] + extra
        t0 = time.time()
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if done.returncode != 0:  # recorded, not fatal: e.g. an EAR target the model cannot reach
            return {"config": config, "command": Relative(" ".join(cmd).replace(out_dir, "OUT")),
                    "error": (done.stderr.strip().splitlines() or ["(no message)"])[-1],
                    "seconds": time.time() - t0}
        report = json.load(open(os.path.join(out_dir, "report.json")))
        units = report["units"]
        gsq = [u for u in units if "gsq_changed_fraction" in u]
        row = {
            "config": config,
            "command": Relative(" ".join(cmd).replace(out_dir, "OUT")),
            "eval": report.get("eval"),
            "bits_per_param": report["bits_per_param"],
            "phases": report["phases"],
            "fallback_experts": report["fallback_experts"],
            "seconds": time.time() - t0,
        }
        if "slq" in report:
            q = report["slq"]
            row["slq"] = {k: q.get(k) for k in (
                "mode", "budget_bits", "target_ear", "average_bits", "predicted_kl",
                "predicted_ear", "predicted_ear_summed", "ear_per_root_kl", "ear_model", "probes_run",
                "probes_cached", "exact", "optimality_gap", "predicted_kl_summed",
                "expert_aggregation", "expert_groups")}
            row["slq"]["bits"] = {u["unit"]: u["bits"] for u in q["units"]}
        if "eval_windows" in report:  # per window: paired comparisons between rows
            row["eval_windows"] = report["eval_windows"]
        if gsq:
            row["gsq_changed_fraction"] = sum(u["gsq_changed_fraction"] for u in gsq) / len(gsq)
        return row


def main():
    out = sys.argv[1]
    # Rows already in OUT are not run again (a stopped matrix resumes where it was).
    done = set()
    if os.path.exists(out):
        done = {json.loads(line)["config"] for line in open(out) if line.strip()}
    with open(out, "a") as f:
        for config in sys.argv[2:]:
            if config in done:
                continue
            row = run(config)
            row["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
            # QCTL_COMMIT: the commit a binary given by QCTL was built from.
            row["commit"] = os.environ.get("QCTL_COMMIT") or subprocess.run(
                ["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                capture_output=True, text=True).stdout.strip()
            f.write(json.dumps(row) + "\n")
            f.flush()
            ev = row.get("eval") or {}
            print(config, "ppl", ev.get("ppl"), "kl", ev.get("kl"), "%.0fs" % row["seconds"],
                  flush=True)


if __name__ == "__main__":
    main()
