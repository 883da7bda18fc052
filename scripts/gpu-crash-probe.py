#!/usr/bin/env python3
"""Narrows down the `qctl quantize --slq --per-expert-bits ... --device cuda` crash (docs/results.md,
"Not done, noticed"): the probe run, then the same two random allocations as
bench/slq_per_expert_additivity.py (seed 1) in several orders and settings, each run's exit status
and last stderr line one JSON line in OUTDIR/crash-probe.jsonl; the first crashing setting is
then run once more under cuda-gdb (backtrace, registers, the stack's words with their symbols,
every thread's backtrace) into OUTDIR/gdb.txt.

Usage: QCTL=build-gpu/coordinator/qctl/qctl QUANT_SHARED=DIR python3 scripts/gpu-crash-probe.py
         MODEL OUTDIR [qctl flags...]
"""
import json
import os
import random
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "bench"))
from slq_per_expert_additivity import command  # noqa: E402  (reads QCTL and QUANT_SHARED)


def main():
    model, out = sys.argv[1:3]
    extra = sys.argv[3:]
    os.makedirs(out, exist_ok=True)
    log = open(os.path.join(out, "crash-probe.jsonl"), "a")
    tmp = tempfile.mkdtemp(prefix="crash-probe-")
    cache = os.path.join(tmp, "cache")
    first = subprocess.run(command(model, os.path.join(tmp, "probe"), cache, extra,
                                   evaluate=False), capture_output=True, text=True)
    if first.returncode != 0:
        print("probe run failed:", first.returncode, first.stderr[-2000:])
        return 1
    rep = json.load(open(os.path.join(tmp, "probe", "report.json")))
    probes = rep["slq"]["probes"]
    units = sorted(u["unit"] for u in rep["slq"]["units"])
    rng = random.Random(1)
    allocs = []
    for i in range(2):
        alloc = {u: rng.choice(sorted(int(b) for b in probes[u])) for u in units}
        allocs.append(os.path.join(tmp, "alloc%d.json" % i))
        json.dump(alloc, open(allocs[-1], "w"))
    # (label, allocation, output directory, extra environment)
    plan = [("A0 new out", 0, "out", {}), ("A1 out exists", 1, "out", {}),
            ("A1 again", 1, "out", {}), ("A0 out exists", 0, "out", {}),
            ("A1 new out", 1, "out2", {}), ("A1 OMP_NUM_THREADS=1", 1, "out3",
                                             {"OMP_NUM_THREADS": "1"}),
            ("A1 LD_BIND_NOW=1", 1, "out4", {"LD_BIND_NOW": "1"}),
            ("A0 new out again", 0, "out5", {}), ("A1 no eval", 1, "out6", {"NO_EVAL": "1"})]
    crashed = None
    for label, a, od, env_extra in plan:
        env = dict(os.environ, **{k: v for k, v in env_extra.items() if k != "NO_EVAL"})
        cmd = command(model, os.path.join(tmp, od), cache, extra, allocs[a],
                      evaluate="NO_EVAL" not in env_extra)
        t0 = time.time()
        done = subprocess.run(cmd, capture_output=True, text=True, env=env)
        lines = done.stderr.strip().splitlines()
        row = {"label": label, "rc": done.returncode, "seconds": round(time.time() - t0, 1),
               "stderr_lines": len(lines), "last": lines[-3:] if lines else []}
        log.write(json.dumps(row) + "\n")
        log.flush()
        print(json.dumps(row), flush=True)
        if done.returncode < 0 and crashed is None:
            crashed = (cmd, env)
            with open(os.path.join(out, "crash-stderr.txt"), "w") as f:
                f.write(done.stderr)
    if crashed is not None:
        cmd, env = crashed
        gdb = ["cuda-gdb", "-q", "-batch", "-ex", "set pagination off", "-ex", "run",
               "-ex", "bt 30", "-ex", "info registers rip rsp rbp", "-ex", "x/160a $sp",
               "-ex", "thread apply all bt 12", "-ex", "info sharedlibrary", "--args"] + cmd
        with open(os.path.join(out, "gdb.txt"), "w") as f:
            subprocess.run(gdb, stdout=f, stderr=subprocess.STDOUT, env=env, timeout=240)
    return 0


if __name__ == "__main__":
    sys.exit(main())
