#!/usr/bin/env python3
"""Turns the JSON lines of bench/run_foundation.sh into the markdown tables of docs/results.md
and docs/benchmarks.md, so no number is copied by hand.

Usage: foundation_tables.py FOUNDATION.jsonl     (stdlib only)
"""
import json
import sys

MiB = 1 << 20


def table(header, rows):
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def g(x, fmt):
    return "" if x is None else format(x, fmt)


def main():
    lines = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
    by = {}
    for l in lines:
        by.setdefault(l["bench"], []).append(l)
    p = print

    for m in by.get("machine", []):
        p(f"Machine: {m['date_utc']}, nproc {m['nproc']}, lscpu model name `{m['lscpu_model_name']}`, "
          f"{m['mem_total_kb'] // 1024} MiB RAM, OPENBLAS_NUM_THREADS={m['openblas_num_threads']}, "
          f"commit {m['git_head']}, load average at start {m['loadavg_1_5_15']}")
    for m in by.get("done", []):
        p(f"Run took {m['seconds']:.0f} s; load average at the end {m['loadavg_1_5_15']}")

    p("\n### Forward parity\n")
    p(table(["model", "logits rel err", "hidden states rel err (entry 0..L)", "max", "test"],
            [(r["model"], g(r["logits_rel_err"], ".2e"),
              ", ".join(format(x, ".2e") for x in r["hidden_rel_err"]) or "(logits only)",
              g(r["hidden_max_rel_err"], ".2e"), "pass" if r["test_passed"] else "FAIL")
             for r in by.get("parity_forward", [])]))
    if by.get("parity_forward"):
        p(f"\n`{by['parity_forward'][0]['cmd']}`")

    p("\n### Tokenizer parity\n")
    p(table(["tokenizer", "ids without special tokens", "ids with special tokens", "all 7 shared tests"],
            [(r["tokenizer"], f"{r['matched_plain']}/{r['cases']}",
              f"{r['matched_with_special']}/{r['cases']}",
              "pass" if all(r["tests"].values()) and r["tests"] else "FAIL")
             for r in by.get("parity_tokenizer", [])]))
    if by.get("parity_tokenizer"):
        p(f"\n`{by['parity_tokenizer'][0]['cmd']}`")

    p("\n### Perplexity\n")
    rows, seen = [], set()
    for r in by.get("eval", []):
        key = (r["model"], r["text"], r["compute"], r["reference"])
        if key in seen or "ppl_reference" not in r:
            continue
        seen.add(key)
        rows.append((r["model"], r["text"], r["compute"], f"{r['windows']}/{r.get('windows_reference', '')}",
                     f"{r['ppl']:.4f}", f"{r['ppl_reference']:.4f}", f"{r['ppl_rel_diff']:+.1e}",
                     f"`{r['cmd']}`"))
    p(table(["model", "text", "compute", "windows ours/ref", "ppl ours", "ppl reference", "relative diff",
             "command"], rows))
    rows = []
    for r in by.get("eval", []):
        if "kl_reference" in r:
            rows.append((r["model"], f"{r['kl']:.5f}", f"{r['kl_reference']:.5f}", f"{r['ear']:.4f}",
                         f"{r['ear_reference']:.4f}", f"{r['ear_top10']:.4f}",
                         f"{r['ear_top10_reference']:.4f}", f"{r['flip_rate']:.4f}",
                         f"{r['flip_rate_reference']:.4f}", f"`{r['cmd']}`"))
    if rows:
        p("\nbf16 compute against fp32 compute (kjv_val):\n")
        p(table(["model", "KL ours", "KL ref", "EAR ours", "EAR ref", "EAR_top10 ours",
                 "EAR_top10 ref", "flip ours", "flip ref", "command"], rows))

    if by.get("rtn_anchor"):
        p("\n### RTN anchor (kjv_val, fp32 compute, group 128)\n")
        rows = []
        for r in by["rtn_anchor"]:
            rows.append((r["model"], r["scope"], r["bits"], r["grid"],
                         f"{r['ppl']:.3f}", f"{r['ppl_reference']:.3f}", f"{100 * r['ppl_rel_diff']:+.3f}%",
                         f"{r['kl']:.4f}", f"{r['kl_reference']:.4f}",
                         f"{r['ear']:.4f}", f"{r['ear_reference']:.4f}",
                         f"{r['ear_top10']:.4f}", f"{r['ear_top10_reference']:.4f}",
                         f"{r['flip_rate']:.4f}", f"{r['flip_rate_reference']:.4f}"))
        p(table(["model", "scope", "bits", "grid", "ppl", "ppl ref", "diff", "KL", "KL ref",
                 "EAR", "EAR ref", "EAR_top10", "top10 ref", "flip", "flip ref"], rows))
        worst_ppl = max(abs(r["ppl_rel_diff"]) for r in by["rtn_anchor"])
        worst = {k: max(abs(r[k] - r[k + "_reference"]) for r in by["rtn_anchor"])
                 for k in ("kl", "ear", "ear_top10", "flip_rate")}
        t = by["rtn_anchor_test"][0]
        p(f"\n{t['rows']} rows; worst |ppl diff| {100 * worst_ppl:.4f}%; worst absolute diffs "
          f"(the test prints 4 decimals): KL {worst['kl']:.4f}, EAR {worst['ear']:.4f}, "
          f"EAR_top10 {worst['ear_top10']:.4f}, flip rate {worst['flip_rate']:.4f}; test "
          f"{'passed' if t['test_passed'] else 'FAILED'} in {t['seconds']:.0f} s: `{t['cmd']}`")

    p("\n### Eval speed against the GEMM floor\n")
    rows = []
    for r in by.get("eval_speed", []):
        rows.append((r["model"], f"{r['flops_per_token'] / 1e6:.3f}",
                     " / ".join(f"{x:.1f}" for x in r["gemm_gflops_before_after"]),
                     f"{r['floor_tokens_per_second']:.0f}",
                     " / ".join(f"{x:.0f}" for x in r["tokens_per_second_runs"]),
                     f"{r['tokens_per_second_best']:.0f}", f"{r['ratio_best_to_floor']:.3f}",
                     f"{r['ratio_median_to_floor']:.3f}"))
    p(table(["model", "MFLOP/token", "GEMM GFLOP/s before / after", "floor tok/s",
             "tok/s runs", "tok/s best", "best / floor", "median / floor"], rows))
    for r in by.get("eval_threads", []):
        p(f"\n`{r['cmd']}`: {r['tokens_per_second']:.0f} tok/s, "
          f"{r['ratio_to_default']:.2f}x the default's best ({r['default_tokens_per_second_best']:.0f})")
    others = [r for r in by.get("eval", []) if r["compute"] == "bf16" or r["text"] != "kjv_val"]
    if others:
        p("\nOther evals of the same run (tok/s counts both models where a reference runs):\n")
        p(table(["model", "text", "compute", "reference", "tok/s", "peak RSS MiB"],
                [(r["model"], r["text"], r["compute"], "fp32 original" if r["reference"] else "",
                  f"{r['tokens_per_second']:.0f}", f"{r['peak_rss_bytes'] / MiB:.0f}") for r in others]))

    p("\n### Tokenizer throughput\n")
    p(table(["tokenizer", "text", "bytes", "tokens (ours / baseline)", "baseline regex engine", "cold MB/s", "warm MB/s",
             "baseline cold", "baseline warm", "cold ratio", "warm ratio"],
            [(r["tokenizer"], r["text"], r["bytes"], f"{r['tokens']} / {r['baseline_tokens']}", r.get("baseline_engine", "regex"),
              f"{r['cold_mb_per_s']:.2f}", f"{r['warm_mb_per_s']:.2f}",
              f"{r['baseline_cold_mb_per_s']:.2f}", f"{r['baseline_warm_mb_per_s']:.2f}",
              f"{r['ratio_cold']:.1f}", f"{r['ratio_warm']:.1f}") for r in by.get("tokenizer_speed", [])]))
    for r in by.get("tokenizer_speed", []):
        if "baseline_reference_matched" in r:
            p(f"\nbaseline check ({r['tokenizer']}): {r['baseline_reference_matched']}/"
              f"{r['baseline_reference_total']} reference encodings: `{r['cmd_baseline']}`")

    p("\n### Safetensors read throughput\n")
    p(table(["model", "shard bytes", "passes", "read_bench raw MB/s", "read_bench f32 MB/s",
             "cat MB/s", "raw / cat", "f32 / cat"],
            [(r["model"], r["shard_bytes"], r["repeat"], f"{r['raw_mb_per_s_best']:.0f}",
              f"{r['f32_mb_per_s_best']:.0f}", f"{r['cat_mb_per_s_best']:.0f}",
              f"{r['ratio_raw_to_cat']:.2f}", f"{r['ratio_f32_to_cat']:.2f}")
             for r in by.get("read_speed", [])]))

    p("\n### Peak resident memory\n")
    for r in by.get("rss_runtime", []):
        p(f"libtorch runtime alone (`{r['cmd']}`): {r['process_maxrss_bytes'] / MiB:.0f} MiB\n")
    p(table(["model", "model MiB (bf16 shards)", "peak RSS MiB (eval kjv_val fp32)", "RSS / model"],
            [(r["model"], f"{r['model_bytes'] / MiB:.1f}", f"{r['peak_rss_bytes'] / MiB:.0f}",
              f"{r['rss_to_model_bytes']:.1f}") for r in by.get("eval_speed", [])]))
    p("")
    p(table(["tiny-qwen3-moe run", "windows", "peak RSS MiB", "final hidden, all windows MiB",
             "one batch of logits MiB", "command"],
            [(r["what"], r["windows"], f"{r['peak_rss_bytes'] / MiB:.0f}",
              f"{r['hidden_all_windows_bytes'] / MiB:.0f}", f"{r['logits_one_batch_bytes'] / MiB:.0f}",
              f"`{r['cmd']}`") for r in by.get("rss_breakdown", [])]))
    for r in by.get("rss_deep_model", []):
        p(f"\nDeep copy: {r['layers'][0]} -> {r['layers'][1]} layers, model "
          f"{r['model_bytes'][0] / MiB:.1f} -> {r['model_bytes'][1] / MiB:.1f} MiB "
          f"(+{r['model_delta_fp32_bytes'] / MiB:.0f} MiB if held in fp32), peak RSS "
          f"{r['peak_rss_bytes'][0] / MiB:.0f} -> {r['peak_rss_bytes'][1] / MiB:.0f} MiB "
          f"(+{r['rss_delta_bytes'] / MiB:.1f} MiB = {100 * r['rss_delta_to_model_delta']:.1f}% of "
          f"the added bf16 bytes), {r['windows']} windows; tok/s {r['tokens_per_second'][0]:.0f} -> "
          f"{r['tokens_per_second'][1]:.0f}: `{r['cmd']}`")


if __name__ == "__main__":
    main()
