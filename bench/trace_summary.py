#!/usr/bin/env python3
"""Where a `qctl quantize --profile TRACE.json` job spends its time, from the torch (Kineto)
Chrome trace: per task phase and per layer, the wall time of the job's scopes (ProfileScope:
each layer task, the write, the evaluation), the GPU time of the kernels launched inside them
(matched to their launches by Kineto's correlation ids), how many kernels, and how busy the GPU
was; then the kernels that take the most GPU time.

Usage: bench/trace_summary.py TRACE.json [--top 15] [--json OUT.json]
"""
import argparse
import bisect
import functools
import json
import re
import sys
from collections import defaultdict

GPU_CATS = {"kernel", "gpu_memcpy", "gpu_memset"}
LAUNCH_CATS = {"cuda_runtime", "cuda_driver"}


@functools.lru_cache(maxsize=None)  # one parse per scope name, not per GPU event
def phase_of(scope):
    """'L3/gsq[0/2]' -> ('gsq', 3); 'probe-pass/L1/calibrate' -> ('probe', 1); 'eval' -> ('eval', -1)."""
    m = re.match(r"(probe-pass/)?(?:L(\d+)/)?([a-z_]+)", scope)
    if not m:
        return scope, -1
    kind = "probe" if m.group(1) else m.group(3)
    return kind, int(m.group(2)) if m.group(2) else -1


def union_length(intervals):
    total, end = 0.0, float("-inf")
    for a, b in sorted(intervals):
        if b <= end:
            continue
        total += b - max(a, end)
        end = b
    return total


def summarize(trace, top):
    events = [e for e in trace.get("traceEvents", []) if e.get("ph") == "X"]
    scopes = sorted((e["ts"], e["ts"] + e["dur"], e["name"]) for e in events
                    if e.get("cat") == "user_annotation")
    starts = [s[0] for s in scopes]
    launch_ts = {e["args"]["correlation"]: e["ts"] for e in events
                 if e.get("cat") in LAUNCH_CATS and "correlation" in e.get("args", {})}

    def scope_at(ts):
        i = bisect.bisect_right(starts, ts) - 1
        return scopes[i][2] if i >= 0 and ts <= scopes[i][1] else None

    phase_wall = defaultdict(float)
    layer_wall = defaultdict(lambda: defaultdict(float))
    for a, b, name in scopes:
        kind, layer = phase_of(name)
        phase_wall[kind] += b - a
        if layer >= 0:
            layer_wall[layer][kind] += b - a
    phase_gpu = defaultdict(float)
    phase_count = defaultdict(int)
    phase_copies = defaultdict(lambda: [0, 0.0])  # gpu_memcpy / gpu_memset events, seconds
    phase_intervals = defaultdict(list)
    layer_gpu = defaultdict(lambda: defaultdict(float))
    kernels = defaultdict(lambda: [0, 0.0])
    gpu_total = 0.0
    for e in events:
        if e.get("cat") not in GPU_CATS:
            continue
        dur = e.get("dur", 0.0)
        gpu_total += dur
        name = e["name"] if e["cat"] == "kernel" else e["cat"] + ": " + e["name"]
        kernels[name][0] += 1
        kernels[name][1] += dur
        ts = launch_ts.get(e.get("args", {}).get("correlation"))
        scope = scope_at(ts) if ts is not None else None
        kind, layer = phase_of(scope) if scope else ("outside the job's scopes", -1)
        phase_gpu[kind] += dur
        phase_count[kind] += 1
        if e["cat"] != "kernel":
            phase_copies[kind][0] += 1
            phase_copies[kind][1] += dur
        phase_intervals[kind].append((e["ts"], e["ts"] + dur))
        if layer >= 0:
            layer_gpu[layer][kind] += dur
    span = (max(e["ts"] + e.get("dur", 0) for e in events) - min(e["ts"] for e in events)
            if events else 0.0)
    out = {"trace_span_s": span / 1e6, "gpu_time_s": gpu_total / 1e6,
           "gpu_events": sum(c for c, _ in kernels.values()), "phases": [], "layers": [],
           "top_kernels": []}
    for kind in sorted(set(phase_wall) | set(phase_gpu), key=lambda k: -phase_wall.get(k, 0)):
        wall = phase_wall.get(kind, 0.0)
        out["phases"].append({
            "phase": kind, "wall_s": wall / 1e6, "gpu_s": phase_gpu[kind] / 1e6,
            "gpu_busy_s": union_length(phase_intervals[kind]) / 1e6,
            "gpu_events": phase_count[kind],
            "copies": phase_copies[kind][0], "copies_s": phase_copies[kind][1] / 1e6,
            "mean_event_us": phase_gpu[kind] / phase_count[kind] if phase_count[kind] else 0.0})
    for layer in sorted(layer_wall):
        out["layers"].append({"layer": layer,
                              "wall_s": {k: v / 1e6 for k, v in layer_wall[layer].items()},
                              "gpu_s": {k: v / 1e6 for k, v in layer_gpu[layer].items()}})
    for name, (count, dur) in sorted(kernels.items(), key=lambda kv: -kv[1][1])[:top]:
        out["top_kernels"].append({"name": name, "count": count, "total_s": dur / 1e6,
                                   "mean_us": dur / count,
                                   "share": dur / gpu_total if gpu_total else 0.0})
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("trace")
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--json")
    a = ap.parse_args()
    try:
        with open(a.trace) as f:
            trace = json.load(f)
    except (OSError, ValueError) as e:
        print("trace_summary: %s: %s" % (a.trace, e), file=sys.stderr)
        return 1
    s = summarize(trace, a.top)
    print("trace %.2f s; GPU events %d taking %.3f s" % (s["trace_span_s"], s["gpu_events"],
                                                     s["gpu_time_s"]))
    print("| phase | wall s (scopes) | GPU s | GPU busy s | busy / wall | GPU events | mean us "
          "| of which copies | copies s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for p in s["phases"]:
        busy = p["gpu_busy_s"] / p["wall_s"] if p["wall_s"] else float("nan")
        print("| %s | %.3f | %.3f | %.3f | %.0f%% | %d | %.1f | %d | %.3f |" % (
            p["phase"], p["wall_s"], p["gpu_s"], p["gpu_busy_s"], 100 * busy, p["gpu_events"],
            p["mean_event_us"], p["copies"], p["copies_s"]))
    kinds = sorted({k for l in s["layers"] for k in l["wall_s"]})
    print("\n| layer | " + " | ".join("%s wall / GPU s" % k for k in kinds) + " |")
    print("|---|" + "---|" * len(kinds))
    for l in s["layers"]:
        print("| %d | " % l["layer"] + " | ".join(
            "%.3f / %.3f" % (l["wall_s"].get(k, 0), l["gpu_s"].get(k, 0)) if k in l["wall_s"]
            else "" for k in kinds) + " |")
    print("\n| kernel | count | total s | mean us | share of GPU time |")
    print("|---|---|---|---|---|")
    for k in s["top_kernels"]:
        print("| %s | %d | %.3f | %.1f | %.1f%% |" % (k["name"][:90], k["count"], k["total_s"],
                                                     k["mean_us"], 100 * k["share"]))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(s, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
