#!/usr/bin/env python3
"""Brute force over every allocation of a tied-unit probe table (6 units x 6 bitwidths = 46,656
on these models): at each average-bits budget, the allocation minimising the summed KL and the
one minimising the quadrature EAR model (1.1 sqrt(sum of squared unit 1 - EAR),
job/slq_files.h), and each one's predicted EAR next to uniform's. Parameter weights:
gate_up units hold two matrices of a down_proj unit's size (true of both tiny models).

Usage: bench/slq_bruteforce.py PROBES.json [BUDGET ...]
"""
import itertools
import json
import math
import sys


def main():
    probes = json.load(open(sys.argv[1]))["probes"]
    budgets = [float(b) for b in sys.argv[2:]] or [3, 3.5, 4, 5]
    units = sorted(probes)
    weight = {u: 2 if "gate_up" in u else 1 for u in units}
    total = sum(weight.values())
    bits = sorted({int(b) for u in units for b in probes[u]})
    quad = lambda combo: 1 - 1.1 * math.sqrt(sum(probes[u][str(b)]["ear_loss"] ** 2
                                                 for u, b in zip(units, combo)))
    for budget in budgets:
        best_kl = best_quad = None
        for combo in itertools.product(bits, repeat=len(units)):
            if sum(weight[u] * b for u, b in zip(units, combo)) / total > budget + 1e-9:
                continue
            kl = sum(probes[u][str(b)]["kl"] for u, b in zip(units, combo))
            q = quad(combo)
            if best_kl is None or kl < best_kl[0]:
                best_kl = (kl, combo)
            if best_quad is None or q > best_quad[0]:
                best_quad = (q, combo)
        row = {"budget": budget, "min_kl_allocation": best_kl[1],
               "max_quadrature_ear_allocation": best_quad[1], "same": best_kl[1] == best_quad[1],
               "predicted_ear_min_kl": quad(best_kl[1]), "predicted_ear_best": best_quad[0]}
        if budget == int(budget) and int(budget) in bits:
            row["predicted_ear_uniform"] = quad([int(budget)] * len(units))
        print(json.dumps(row))


if __name__ == "__main__":
    main()
