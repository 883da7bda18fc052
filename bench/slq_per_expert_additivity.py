#!/usr/bin/env python3
"""Per-expert SLQ additivity (issue 9): random per-expert allocations (--per-expert-bits, every
routed expert's gate_up and down_proj drawn uniformly from the candidates) quantized for real
and evaluated; one JSON line per allocation with the allocation and the measured KL and EAR.
The probe table (per-expert units and the tied per-layer probes that calibrate them) is written
once to OUT.probes.json; predictions under each expert model are made from it afterwards
(bench/slq_per_layer.py), so one set of runs checks every model.

Usage: bench/slq_per_expert_additivity.py MODEL OUT.jsonl N SEED PROBE_CACHE [qctl flags...]
DEADLINE (epoch seconds, optional): no allocation is started after it.
"""
import json
import os
import random
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QCTL = os.environ.get("QCTL", os.path.join(ROOT, "build", "coordinator", "qctl", "qctl"))
SHARED = os.environ.get("QUANT_SHARED") or os.path.normpath(os.path.join(ROOT, "..", "shared"))


def command(model, out_dir, cache, extra, allocation=None, evaluate=True):
    """The qctl command line of one per-expert SLQ job (also scripts/gpu-crash-probe.py's)."""
    cmd = [QCTL, "quantize", "--model", os.path.join(SHARED, "models", model), "--out", out_dir,
           "--method", "gptq", "--grid", "asym", "--slq", "--bits", "4", "--per-expert-bits",
           "--export", "native", "--probe-cache", cache, "--overwrite"] + extra
    if allocation:
        cmd += ["--slq-allocation", allocation]
    if not evaluate:
        cmd += ["--no-eval"]
    return cmd


def quantize(model, out_dir, cache, extra, allocation=None, evaluate=True):
    cmd = command(model, out_dir, cache, extra, allocation, evaluate)
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError("qctl failed (%d): %s" % (done.returncode, done.stderr.strip()[-2000:]))
    return cmd, json.load(open(os.path.join(out_dir, "report.json")))


def main():
    model, out_path = sys.argv[1:3]
    n, seed, cache = int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
    extra = sys.argv[6:]
    deadline = float(os.environ.get("DEADLINE", "inf"))
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory() as tmp:
        _, first = quantize(model, os.path.join(tmp, "probe"), cache, extra, evaluate=False)
        probes = first["slq"]["probes"]
        units = sorted(u["unit"] for u in first["slq"]["units"])
        with open(out_path + ".probes.json", "w") as f:
            json.dump({"model": model, "units": units, "probes": probes,
                       "expert_groups": first["slq"].get("expert_groups")}, f)
        with open(out_path, "a") as f:
            for i in range(n):
                if time.time() > deadline:
                    print("deadline: stopped after", i, "allocations", flush=True)
                    break
                alloc = {u: rng.choice(sorted(int(b) for b in probes[u])) for u in units}
                path = os.path.join(tmp, f"alloc{i}.json")
                json.dump(alloc, open(path, "w"))
                t0 = time.time()
                cmd, rep = quantize(model, os.path.join(tmp, "out"), cache, extra, path)
                ev = rep["eval"]
                row = {"model": model, "seed": seed, "index": i, "allocation": alloc,
                       "average_code_bits": rep["slq"]["average_bits"],
                       "bits_per_param": rep["bits_per_param"],
                       "predicted_kl_job": rep["slq"]["predicted_kl"],
                       "expert_aggregation": rep["slq"].get("expert_aggregation"),
                       "measured_kl": ev["kl"][0], "measured_ear_loss": 1 - ev["ear"][0],
                       "eval": ev, "seconds": time.time() - t0,
                       "command": " ".join(cmd).replace(tmp, "TMP").replace(ROOT + "/", "")
                                              .replace(SHARED, "../shared")}
                f.write(json.dumps(row) + "\n")
                f.flush()
                print(model, i, "bits %.3f" % row["average_code_bits"],
                      "KL %.5f 1-EAR %.5f" % (row["measured_kl"], row["measured_ear_loss"]),
                      "%.1fs" % row["seconds"], flush=True)


if __name__ == "__main__":
    main()
