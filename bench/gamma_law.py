#!/usr/bin/env python3
"""The gamma^2 law for symmetric against asymmetric grids (issue 9): per group of 128 input
columns of every routed-expert weight, gamma = (symmetric grid's range) / (asymmetric grid's
range) = 2 max|w| / (max(w, 0) - min(w, 0)) >= 1, so min/max RTN's step, and its mean squared
rounding error, are gamma (gamma^2) times larger on the symmetric grid. Prints the mean of gamma^2
over groups (the predicted MSE ratio sym/asym) and its quartiles. Pure Python (no numpy here).

Usage: bench/gamma_law.py MODEL_DIR [GROUP]
"""
import json
import os
import struct
import sys
from array import array


def tensors(model_dir):
    for name in sorted(os.listdir(model_dir)):
        if not name.endswith(".safetensors") or name.startswith("reference"):
            continue
        path = os.path.join(model_dir, name)
        with open(path, "rb") as f:
            n = struct.unpack("<Q", f.read(8))[0]
            header = json.loads(f.read(n))
            base = 8 + n
            for key, info in header.items():
                if key == "__metadata__" or ".mlp.experts." not in key or info["dtype"] != "BF16":
                    continue
                if len(info["shape"]) != 2:
                    continue
                start, end = info["data_offsets"]
                f.seek(base + start)
                raw = array("H")
                raw.frombytes(f.read(end - start))
                wide = array("I", (x << 16 for x in raw))
                yield key, info["shape"], array("f", wide.tobytes())


def main():
    model_dir = sys.argv[1]
    group = int(sys.argv[2]) if len(sys.argv) > 2 else 128
    g2 = []
    for key, (rows, cols), w in tensors(model_dir):
        g = group if cols % group == 0 else cols  # per-channel fallback, as the quantizer
        for r in range(rows):
            row = w[r * cols:(r + 1) * cols]
            for c0 in range(0, cols, g):
                chunk = row[c0:c0 + g]
                hi, lo = max(max(chunk), 0.0), min(min(chunk), 0.0)
                if hi - lo <= 0:
                    continue
                gamma = 2 * max(hi, -lo) / (hi - lo)
                g2.append(gamma * gamma)
    g2.sort()
    n = len(g2)
    print(json.dumps({"model": os.path.basename(model_dir.rstrip("/")), "groups": n,
                      "mean_gamma2": sum(g2) / n, "q25": g2[n // 4], "median": g2[n // 2],
                      "q75": g2[3 * n // 4]}))


if __name__ == "__main__":
    main()
