#!/usr/bin/env python3
"""SLQ estimator choice (issue 9, item 1): does the free layer-local proxy rank units the way the
end-to-end probes do? For each bitwidth, quantizes the model uniformly (GPTQ, --no-eval) and sums
each SLQ unit's tr(dW H dW^T) from report.json (`proxy_loss`), then compares with the cached
end-to-end probe KL of the same unit and bits: Spearman over units per bitwidth, and pooled.

Usage: bench/slq_estimator.py MODEL PROBE_CACHE.json GRID [BITS...]
"""
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(__file__))
from slq_additivity import QCTL, SHARED, spearman  # noqa: E402


def unit_of(name):
    """The tied SLQ unit of a linear (worker/tasks/slq_tasks.cc SlqUnitsOfLayer)."""
    module = name[:-len(".weight")] if name.endswith(".weight") else name
    parent, leaf = module.rsplit(".", 1)
    prefix = module[:module.index(".", len("model.layers.")) + 1]
    local = module[len(prefix):]
    if local.startswith("mlp.experts."):
        return prefix + ("mlp.experts.gate_up" if leaf in ("gate_proj", "up_proj")
                         else "mlp.experts." + leaf)
    if leaf in ("gate_proj", "up_proj"):
        return parent + ".gate_up"
    if leaf in ("q_a_proj", "kv_a_proj_with_mqa"):
        return parent + ".qkv_a"
    return module


def main():
    model, cache, grid = sys.argv[1:4]
    bits_list = [int(b) for b in sys.argv[4:]] or [2, 3, 4]
    probes = json.load(open(cache))["probes"]
    pooled_proxy, pooled_probe, out = [], [], {"model": model, "per_bits": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for bits in bits_list:
            cmd = [QCTL, "quantize", "--model", os.path.join(SHARED, "models", model), "--out",
                   os.path.join(tmp, "o"), "--method", "gptq", "--bits", str(bits), "--grid",
                   grid, "--no-eval", "--overwrite"]
            subprocess.run(cmd, env=dict(os.environ, OPENBLAS_NUM_THREADS="2"), check=True,
                           capture_output=True)
            report = json.load(open(os.path.join(tmp, "o", "report.json")))
            proxy = {}
            for u in report["units"]:
                proxy[unit_of(u["name"])] = proxy.get(unit_of(u["name"]), 0.0) + u["proxy_loss"]
            units = sorted(u for u in proxy if u in probes and str(bits) in probes[u])
            px = [proxy[u] for u in units]
            pk = [probes[u][str(bits)]["kl"] for u in units]
            out["per_bits"][bits] = {"units": len(units), "spearman": spearman(px, pk)}
            pooled_proxy += px
            pooled_probe += pk
    out["pooled_spearman"] = spearman(pooled_proxy, pooled_probe)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
