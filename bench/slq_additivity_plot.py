#!/usr/bin/env python3
"""Re-plots an SLQ additivity run (bench/slq_additivity.py's JSON lines) with the EAR model of
the solve: predicted KL (sum of unit probes) against measured KL; the summed unit 1 - EAR against
measured 1 - EAR; and the solve's model, 1.1 sqrt(sum of the units' squared 1 - EAR)
(job/slq_files.h), against measured 1 - EAR. Prints Spearman correlations and the
model's range of measured / predicted.

Usage: bench/slq_additivity_plot.py RUN.jsonl PNG PROBES.json
"""
import json
import math
import subprocess
import sys

sys.path.insert(0, __import__("os").path.dirname(__file__))
from slq_additivity import spearman  # noqa: E402


def main():
    path, png, probes_path = sys.argv[1], sys.argv[2], sys.argv[3]
    probes = json.load(open(probes_path))["probes"]
    margin = 1.1
    rows = [json.loads(line) for line in open(path) if line.strip()]
    model = rows[0]["model"]
    pk = [r["predicted_kl"] for r in rows]
    mk = [r["measured_kl"] for r in rows]
    pe = [r["predicted_ear_loss"] for r in rows]
    me = [r["measured_ear_loss"] for r in rows]
    pm = [margin * math.sqrt(sum(probes[u][str(b)]["ear_loss"] ** 2
                                 for u, b in r["allocation"].items())) for r in rows]
    rho_kl, rho_sum, rho_model = spearman(pk, mk), spearman(pe, me), spearman(pm, me)
    ratios = [m / p for p, m in zip(pm, me)]
    print(json.dumps({"model": model, "n": len(rows), "spearman_kl": rho_kl,
                      "spearman_ear_summed": rho_sum, "spearman_ear_model": rho_model,
                      "measured_over_predicted_min": min(ratios),
                      "measured_over_predicted_max": max(ratios)}))
    dat = png + ".dat"
    with open(dat, "w") as f:
        for row in zip(pk, mk, pe, me, pm):
            f.write(" ".join(str(x) for x in row) + "\n")
    script = f"""
set terminal pngcairo size 1500,480
set output '{png}'
set multiplot layout 1,3 title '{model}: SLQ additivity, {len(rows)} random allocations quantized for real (GPTQ asym, kjv\\_val)'
f(x) = x
set key top left
set xlabel 'predicted KL (sum of unit probes)'
set ylabel 'measured KL'
set title sprintf('KL: Spearman %.3f', {rho_kl})
plot '{dat}' using 1:2 with points pt 7 notitle, f(x) with lines dt 2 title 'y = x'
set xlabel 'sum of unit probes 1 - EAR'
set ylabel 'measured 1 - EAR'
set title sprintf('1 - EAR summed: Spearman %.3f', {rho_sum})
plot '{dat}' using 3:4 with points pt 7 notitle, f(x) with lines dt 2 title 'y = x'
set xlabel '1.1 sqrt(sum of the units squared 1 - EAR)'
set title sprintf('1 - EAR, the solve model: Spearman %.3f, measured/predicted %.2f-%.2f', {rho_model}, {min(ratios)}, {max(ratios)})
plot '{dat}' using 5:4 with points pt 7 notitle, f(x) with lines dt 2 title 'y = x'
unset multiplot
"""
    subprocess.run(["gnuplot"], input=script, text=True, check=True)
    __import__("os").remove(dat)


if __name__ == "__main__":
    main()
