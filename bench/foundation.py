#!/usr/bin/env python3
"""The measurements of the foundation issue (issue 7), driven by bench/run_foundation.sh.

Prints one JSON line per measurement on stdout (progress on stderr). Every line carries `cmd`,
the exact command (run from the repository root) that produced its numbers; every speed figure
is set against a baseline or floor measured in the same run, on the same machine:
  - qctl eval tokens/s      vs the GEMM floor: best fp32 GEMM rate of gemm_bench, run just
                              before and after that model's evals, / bench/flops.py FLOPs per token
  - tokenizer_bench MB/s    vs bench/tokenizer_baseline.py (plain Python BPE, same pipeline)
  - read_bench MB/s         vs `cat` of the same shards, the same number of times
  - peak RSS                vs the model's shard bytes, the libtorch runtime alone, and a
                              64-layer copy of tiny-qwen3-moe (bench/make_deep_model.py)
Stdlib only. Builds nothing: expects ./build (bash scripts/build.sh).
"""
import argparse
import json
import os
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.path.relpath(os.environ.get("BUILD_DIR", os.path.join(ROOT, "build")), ROOT)
SHARED = os.path.relpath(os.environ.get("QUANT_SHARED_DIR", os.path.join(ROOT, "..", "shared")),
                         ROOT)
QCTL = f"{BUILD}/coordinator/qctl/qctl"
MODELS = ["tiny-deepseek-v3", "tiny-qwen3-moe", "fixtures/tiny-deepseek-v3-fp8",
          "fixtures/tiny-kimi-k2"]
TEXTS = {"kjv_val": f"{SHARED}/data/eval/kjv_val.txt",
         "fortunes_val": f"{SHARED}/data/eval/fortunes_val.txt"}
WINDOW_TOKENS = 256  # the shared recipe: BOS + 255 text tokens


def log(msg):
    print(f"[foundation {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def emit(obj):
    print(json.dumps(obj, separators=(",", ":")), flush=True)


def run(cmd, check=True):
    """Runs cmd (a list) from ROOT. Returns (stdout, stderr, seconds, returncode)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    out, err = proc.communicate()
    seconds = time.perf_counter() - start
    rc = proc.returncode
    if check and rc != 0:
        raise RuntimeError(f"{shlex.join(cmd)} exited {rc}:\n{out[-2000:]}\n{err[-2000:]}")
    return out, err, seconds, rc


LAST_USAGE = {}


def run_rss(cmd, env=None):
    """Runs cmd and returns (stdout, maxrss_bytes, returncode) of that child alone (wait4's
    rusage); its wall and CPU seconds and the load average before it go to LAST_USAGE."""
    load = loadavg()[0]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True, env=dict(os.environ, **(env or {})))
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    LAST_USAGE.update(wall_s=time.perf_counter() - start,
                      cpu_s=usage.ru_utime + usage.ru_stime, loadavg_1min_before=load)
    return out, usage.ru_maxrss * 1024, proc.returncode


def model_dir(model):
    return f"{SHARED}/models/{model}"


def load_json(path):
    with open(os.path.join(ROOT, path), encoding="utf-8") as f:
        return json.load(f)


def loadavg():
    return [float(x) for x in open("/proc/loadavg").read().split()[:3]]


# ---------------------------------------------------------------- machine
def machine():
    model_name = ""
    for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
        if line.startswith("Model name:"):
            model_name = line.split(":", 1)[1].strip()
    # A source snapshot (git archive) has no .git: FOUNDATION_COMMIT names what it was made of.
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                          text=True).stdout.strip() or os.environ.get("FOUNDATION_COMMIT", "")
    emit({"bench": "machine", "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
          "nproc": os.cpu_count(), "lscpu_model_name": model_name,
          "mem_total_kb": int(open("/proc/meminfo").readline().split()[1]),
          "openblas_num_threads": os.environ.get("OPENBLAS_NUM_THREADS", ""),
          "git_head": head, "loadavg_1_5_15": loadavg(),
          "cmd": "date -u; nproc; lscpu | grep 'Model name'; cat /proc/loadavg"})


# ---------------------------------------------------------------- parity
def parity_forward():
    cmd = [f"{BUILD}/worker/model/model_test"]
    out, _, _, rc = run(cmd, check=False)
    rows = {}
    for m in re.finditer(r"^(\S+) (logits|hidden_states\.(\d+)) rel err (\S+)$", out, re.M):
        row = rows.setdefault(m.group(1), {"logits_rel_err": None, "hidden_rel_err": []})
        if m.group(2) == "logits":
            row["logits_rel_err"] = float(m.group(4))
        else:
            row["hidden_rel_err"].append(float(m.group(4)))
    for model in MODELS:
        row = rows.get(model, {})
        name = re.sub(r"[^A-Za-z0-9]", "_", model)
        ok = re.search(rf"\[       OK \] \S*ParityTest\S*/{name} ", out) is not None
        hidden = row.get("hidden_rel_err", [])
        emit({"bench": "parity_forward", "model": model,
              "logits_rel_err": row.get("logits_rel_err"),
              "hidden_rel_err": hidden, "hidden_max_rel_err": max(hidden) if hidden else None,
              "bound": 1e-4, "test_passed": ok, "cmd": shlex.join(cmd)})
    if rc != 0:
        log(f"model_test exited {rc}")


def parity_tokenizer():
    cmd = [f"{BUILD}/worker/tokenizer/tokenizer_test", "--gtest_filter=Both/SharedTokenizerTest.*"]
    out, _, _, rc = run(cmd, check=False)
    refs = load_json(f"{SHARED}/tokenizers/reference_encodings.json")
    for tok in ("ds", "qwen"):
        tests = {}
        for m in re.finditer(rf"^\[ +(OK|FAILED) +\] Both/SharedTokenizerTest\.(\w+)/{tok} ",
                             out, re.M):
            tests[m.group(2)] = m.group(1) == "OK"
        ok = tests.get("MatchesEveryReferenceEncoding", False)
        # The test asserts matched == 94 for both encodings; on failure gtest prints the count.
        emit({"bench": "parity_tokenizer", "tokenizer": tok, "cases": len(refs[tok]),
              "matched_plain": len(refs[tok]) if ok else None,
              "matched_with_special": len(refs[tok]) if ok else None,
              "tests": tests, "test_passed": ok, "cmd": shlex.join(cmd)})
    if rc != 0:
        log(f"tokenizer_test exited {rc}")


# ---------------------------------------------------------------- eval (parity + speed)
def qctl_eval(model, text="kjv_val", compute="fp32", reference=None, extra=(), env=None):
    cmd = [QCTL, "eval", "--model", model_dir(model)]
    if text != "kjv_val":
        cmd += ["--text", TEXTS.get(text, text)]
    if compute != "fp32":
        cmd += ["--compute", compute]
    if reference:
        cmd += ["--reference", model_dir(reference)]
    cmd += list(extra) + ["--json"]
    out, rss, rc = run_rss(cmd, env)
    if rc != 0:
        raise RuntimeError(f"{shlex.join(cmd)} exited {rc}")
    prefix = "".join(f"{k}={v} " for k, v in (env or {}).items())
    return json.loads(out), rss, prefix + shlex.join(cmd)


def eval_line(model, text, compute, j, cmd, ref_metrics, process_rss):
    line = {"bench": "eval", "model": model, "text": text, "compute": compute,
            "reference": bool(j.get("reference")), "windows": j["windows"],
            "ppl": j["ppl"]["value"], "ppl_ci95": [j["ppl"]["lo"], j["ppl"]["hi"]],
            "tokens_per_second": j["tokens_per_second"], "forward_seconds": j["forward_seconds"],
            "peak_rss_bytes": j["peak_rss_bytes"], "process_maxrss_bytes": process_rss,
            "model_bytes": j["model_bytes"],
            # How much of the 2 cores the process got: low values mean other jobs interfered.
            "process_wall_s": LAST_USAGE["wall_s"], "process_cpu_s": LAST_USAGE["cpu_s"],
            "loadavg_1min_before": LAST_USAGE["loadavg_1min_before"]}
    if ref_metrics:
        key = f"{text}_ppl_{compute}compute"
        if key in ref_metrics:
            line["ppl_reference"] = ref_metrics[key]
            line["ppl_rel_diff"] = j["ppl"]["value"] / ref_metrics[key] - 1
        if f"{text}_windows" in ref_metrics:
            line["windows_reference"] = ref_metrics[f"{text}_windows"]
        want = ref_metrics.get("bf16compute_vs_fp32compute")
        if compute == "bf16" and text == "kjv_val" and j.get("reference") and want:
            for k in ("kl", "ear", "ear_top10", "flip_rate"):
                line[k] = j[k]["value"]
                line[f"{k}_reference"] = want[k]
    for k in ("kl", "ear", "ear_top10", "flip_rate"):
        if k in j and k not in line:
            line[k] = j[k]["value"]
    line["cmd"] = cmd
    emit(line)
    return line


def gemm():
    cmd = [f"{BUILD}/worker/quant/gemm_bench"]
    out, _, _, _ = run(cmd)
    j = json.loads(out.strip().splitlines()[-1])
    j["bench"] = "gemm"
    j["best_gflops"] = max(j["square_1024_gflops"], j["lm_head_4096x256x4096_gflops"])
    j["cmd"] = shlex.join(cmd)
    emit(j)
    return j["best_gflops"]


def flops_per_token(model):
    cmd = ["python3", "bench/flops.py", f"{model_dir(model)}/config.json", str(WINDOW_TOKENS)]
    out, _, _, _ = run(cmd)
    return float(out.strip()), shlex.join(cmd)


def models_eval(repeats):
    evals = {}
    for model in MODELS:
        ref_path = f"{model_dir(model)}/reference_metrics.json"
        ref = load_json(ref_path) if os.path.exists(os.path.join(ROOT, ref_path)) else None
        fpt, fcmd = flops_per_token(model)
        log(f"{model}: speed (gemm, {repeats} x qctl eval fp32 kjv_val, gemm)")
        rates = [gemm()]
        runs = []
        for _ in range(repeats):
            j, rss, cmd = qctl_eval(model)
            runs.append(eval_line(model, "kjv_val", "fp32", j, cmd, ref, rss))
        rates.append(gemm())
        best_rate = max(rates)
        floor_tps = best_rate * 1e9 / fpt
        tps = [r["tokens_per_second"] for r in runs]
        emit({"bench": "eval_speed", "model": model, "flops_per_token": fpt,
              "gemm_gflops_before_after": rates, "gemm_gflops_best": best_rate,
              "floor_tokens_per_second": floor_tps, "tokens_per_second_runs": tps,
              "tokens_per_second_best": max(tps), "tokens_per_second_median": statistics.median(tps),
              "cpu_share_runs": [r["process_cpu_s"] / r["process_wall_s"] / os.cpu_count()
                                 for r in runs],
              "loadavg_1min_runs": [r["loadavg_1min_before"] for r in runs],
              "ratio_best_to_floor": max(tps) / floor_tps,
              "ratio_median_to_floor": statistics.median(tps) / floor_tps,
              "peak_rss_bytes": runs[0]["peak_rss_bytes"], "model_bytes": runs[0]["model_bytes"],
              "rss_to_model_bytes": runs[0]["peak_rss_bytes"] / runs[0]["model_bytes"],
              "cmd": runs[0]["cmd"], "cmd_flops": fcmd, "cmd_gemm": f"{BUILD}/worker/quant/gemm_bench"})
        evals[model] = runs
        if ref is None:
            continue  # the random-weight Kimi fixture: no reference perplexities
        log(f"{model}: parity evals (fortunes fp32, kjv bf16 vs fp32, fortunes bf16)")
        j, rss, cmd = qctl_eval(model, text="fortunes_val")
        eval_line(model, "fortunes_val", "fp32", j, cmd, ref, rss)
        if "kjv_val_ppl_bf16compute" in ref:
            j, rss, cmd = qctl_eval(model, compute="bf16", reference=model)
            eval_line(model, "kjv_val", "bf16", j, cmd, ref, rss)
            j, rss, cmd = qctl_eval(model, text="fortunes_val", compute="bf16")
            eval_line(model, "fortunes_val", "bf16", j, cmd, ref, rss)
    return evals


def threads_check(evals):
    """`qctl eval --threads 2` against the default (libtorch's own intra-op count, 1 here), with
    libgomp's default spin-waiting and with OMP_WAIT_POLICY=PASSIVE."""
    model = "tiny-qwen3-moe"
    base = max(r["tokens_per_second"] for r in evals[model])
    for env in (None, {"OMP_WAIT_POLICY": "PASSIVE"}):
        log(f"{model}: --threads 2 {env or ''}")
        j, rss, cmd = qctl_eval(model, extra=("--threads", "2"), env=env)
        emit({"bench": "eval_threads", "model": model, "threads": 2, "env": env or {},
              "tokens_per_second": j["tokens_per_second"], "default_tokens_per_second_best": base,
              "ratio_to_default": j["tokens_per_second"] / base, "ppl": j["ppl"]["value"],
              "cmd": cmd})


# ---------------------------------------------------------------- tokenizer speed
def tokenizer_speed():
    texts = dict(TEXTS, calib=f"{SHARED}/data/calib/calib.txt")
    for tok in ("ds", "qwen"):
        tok_json = f"{SHARED}/tokenizers/{tok}/tokenizer.json"
        for name, path in texts.items():
            log(f"tokenizer {tok} {name}")
            ours_cmd = [f"{BUILD}/worker/tokenizer/tokenizer_bench", tok_json, path, "20"]
            base_cmd = ["python3", "bench/tokenizer_baseline.py", tok_json, path, "3"]
            if name == "kjv_val":
                base_cmd += ["--check", f"{SHARED}/tokenizers/reference_encodings.json", tok]
            ours = json.loads(run(ours_cmd)[0].strip().splitlines()[-1])
            base = json.loads(run(base_cmd)[0].strip().splitlines()[-1])
            line = {"bench": "tokenizer_speed", "tokenizer": tok, "text": name,
                    "bytes": ours["bytes"], "tokens": ours["tokens"],
                    "baseline_tokens": base["tokens"], "baseline_engine": base.get("engine"),
                    "cold_mb_per_s": ours["cold_mb_per_s"], "warm_mb_per_s": ours["warm_mb_per_s"],
                    "baseline_cold_mb_per_s": base["cold_mb_per_s"],
                    "baseline_warm_mb_per_s": base["warm_mb_per_s"],
                    "ratio_cold": ours["cold_mb_per_s"] / base["cold_mb_per_s"],
                    "ratio_warm": ours["warm_mb_per_s"] / base["warm_mb_per_s"]}
            if "reference_matched" in base:
                line["baseline_reference_matched"] = base["reference_matched"]
                line["baseline_reference_total"] = base["reference_total"]
            line["cmd"] = shlex.join(ours_cmd)
            line["cmd_baseline"] = shlex.join(base_cmd)
            emit(line)


# ---------------------------------------------------------------- read speed
def shard_files(model):
    index = load_json(f"{model_dir(model)}/model.safetensors.index.json")
    return [f"{model_dir(model)}/{s}" for s in sorted(set(index["weight_map"].values()))]


def read_speed(repeat=50, trials=3):
    for model in MODELS:
        log(f"read {model}")
        files = shard_files(model)
        size = sum(os.path.getsize(os.path.join(ROOT, f)) for f in files)
        cat_cmd = ["cat"] + files * repeat
        bench_cmd = [f"{BUILD}/storage/read_bench", model_dir(model), "--repeat", str(repeat)]
        # Warm the page cache: both sides then read cached pages.
        subprocess.run(["cat"] + files, cwd=ROOT, stdout=subprocess.DEVNULL, check=True)
        cat_s, raw, f32 = [], [], []
        for _ in range(trials):  # interleaved, best of each
            j = json.loads(run(bench_cmd)[0].strip().splitlines()[-1])
            raw.append(j["raw"]["mb_per_s"])
            f32.append(j["f32"]["mb_per_s"])
            start = time.perf_counter()
            subprocess.run(cat_cmd, cwd=ROOT, stdout=subprocess.DEVNULL, check=True)
            cat_s.append(time.perf_counter() - start)
        cat_mb_s = size * repeat / 1e6 / min(cat_s)
        emit({"bench": "read_speed", "model": model, "shard_bytes": size, "repeat": repeat,
              "trials": trials, "raw_mb_per_s_best": max(raw), "f32_mb_per_s_best": max(f32),
              "cat_mb_per_s_best": cat_mb_s, "raw_mb_per_s_runs": raw, "f32_mb_per_s_runs": f32,
              "cat_seconds_runs": cat_s, "ratio_raw_to_cat": max(raw) / cat_mb_s,
              "ratio_f32_to_cat": max(f32) / cat_mb_s, "cmd": shlex.join(bench_cmd),
              "cmd_cat": f"cat <the {len(files)} shards x {repeat}> > /dev/null"})


# ---------------------------------------------------------------- memory
def memory():
    model = "tiny-qwen3-moe"
    cfg = load_json(f"{model_dir(model)}/config.json")
    hidden, vocab = cfg["hidden_size"], cfg["vocab_size"]
    log("memory: libtorch runtime, one window, batch sizes, fake-quant, 64-layer copy")
    cmd = [QCTL, "eval", "--help"]
    _, rss, _ = run_rss(cmd)
    emit({"bench": "rss_runtime", "what": "qctl with libtorch loaded, no work",
          "process_maxrss_bytes": rss, "cmd": shlex.join(cmd)})
    with tempfile.TemporaryDirectory(prefix="foundation-") as tmp:
        kjv = open(os.path.join(ROOT, TEXTS["kjv_val"]), "rb").read()
        one = os.path.join(tmp, "one_window.txt")  # ~300 tokens: exactly one window
        open(one, "wb").write(kjv[:1300])
        short = os.path.join(tmp, "short.txt")  # 12 windows
        open(short, "wb").write(kjv[:12000])
        runs = [("one window, batch 1", one, ("--batch", "1")),
                ("kjv_val, batch 1", "kjv_val", ("--batch", "1")),
                ("kjv_val, batch 16 (default)", "kjv_val", ()),
                ("kjv_val, batch 16, rtn fake-quant + fp32 reference", "kjv_val",
                 ("--fake-quant", "rtn", "--bits", "3", "--grid", "asym"))]
        for what, text, extra in runs:
            j, prss, cmd = qctl_eval(model, text=text, extra=extra)
            batch = int(extra[1]) if extra and extra[0] == "--batch" else 16
            models = 2 if "--fake-quant" in extra else 1
            emit({"bench": "rss_breakdown", "model": model, "what": what,
                  "windows": j["windows"], "batch": batch, "peak_rss_bytes": j["peak_rss_bytes"],
                  "model_bytes": j["model_bytes"],
                  # The resident arrays the design predicts: the final hidden states of every
                  # window (fp32, per model; at::cat holds a second copy briefly) and one batch
                  # of logits (fp32, per model).
                  "hidden_all_windows_bytes": models * j["windows"] * WINDOW_TOKENS * hidden * 4,
                  "logits_one_batch_bytes": models * min(batch, j["windows"]) * WINDOW_TOKENS
                  * vocab * 4,
                  "tokens_per_second": j["tokens_per_second"],
                  "cmd": cmd.replace(tmp, "$TMP")})
        deep = os.path.join(tmp, "qwen-64-layers")
        mk = ["python3", "bench/make_deep_model.py", model_dir(model), deep, "64"]
        run(mk)
        small, _, cmd_small = qctl_eval(model, text=short)
        cmd = [QCTL, "eval", "--model", deep, "--text", short, "--json"]
        out, _, rc = run_rss(cmd)
        if rc != 0:
            raise RuntimeError(f"{shlex.join(cmd)} exited {rc}")
        big = json.loads(out)
        d_rss = big["peak_rss_bytes"] - small["peak_rss_bytes"]
        d_model = big["model_bytes"] - small["model_bytes"]
        emit({"bench": "rss_deep_model", "layers": [cfg["num_hidden_layers"], 64],
              "windows": big["windows"],
              "model_bytes": [small["model_bytes"], big["model_bytes"]],
              "peak_rss_bytes": [small["peak_rss_bytes"], big["peak_rss_bytes"]],
              "rss_delta_bytes": d_rss, "model_delta_bytes": d_model,
              "model_delta_fp32_bytes": 2 * d_model,  # bf16 on disk, fp32 once loaded
              "rss_delta_to_model_delta": d_rss / d_model,
              "tokens_per_second": [small["tokens_per_second"], big["tokens_per_second"]],
              "cmd": (shlex.join(mk) + " && " + shlex.join(cmd)).replace(tmp, "$TMP"),
              "cmd_small": cmd_small.replace(tmp, "$TMP")})


# ---------------------------------------------------------------- RTN anchor
def anchor():
    cmd = [f"{BUILD}/worker/eval/anchor_test", "--gtest_filter=*Rtn*"]
    log("RTN anchor table (anchor_test --gtest_filter='*Rtn*', several minutes)")
    out, _, seconds, rc = run(cmd, check=False)
    pat = re.compile(r"^(\S+) rtn (\d)-bit (sym|asym) g(\d+) scope (\w+): ppl (\S+) \(ref (\S+)\) "
                     r"kl (\S+) \(ref (\S+)\) ear (\S+) \(ref (\S+)\) top10 (\S+) \(ref (\S+)\) "
                     r"flip (\S+) \(ref (\S+)\)$", re.M)
    n = 0
    for m in pat.finditer(out):
        g = m.groups()
        v = [float(x) for x in g[5:]]
        emit({"bench": "rtn_anchor", "model": g[0], "bits": int(g[1]), "grid": g[2],
              "group": int(g[3]), "scope": g[4], "ppl": v[0], "ppl_reference": v[1],
              "kl": v[2], "kl_reference": v[3], "ear": v[4], "ear_reference": v[5],
              "ear_top10": v[6], "ear_top10_reference": v[7], "flip_rate": v[8],
              "flip_rate_reference": v[9], "ppl_rel_diff": v[0] / v[1] - 1,
              "ear_diff": v[4] - v[5], "cmd": shlex.join(cmd)})
        n += 1
    emit({"bench": "rtn_anchor_test", "rows": n, "test_passed": rc == 0 and "[  PASSED  ]" in out,
          "seconds": seconds, "cmd": shlex.join(cmd)})


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--skip-anchor", action="store_true", help="leave out the ~6-minute RTN table")
    p.add_argument("--only", default="", help="comma-separated subset of: parity,evals,tokenizer,"
                   "read,memory,anchor (evals: speed and perplexity; default all)")
    p.add_argument("--repeats", type=int, default=5, help="fp32 kjv_val evals per model (speed)")
    args = p.parse_args()
    for binary in (QCTL, f"{BUILD}/worker/quant/gemm_bench", f"{BUILD}/storage/read_bench",
                   f"{BUILD}/worker/tokenizer/tokenizer_bench", f"{BUILD}/worker/model/model_test",
                   f"{BUILD}/worker/tokenizer/tokenizer_test", f"{BUILD}/worker/eval/anchor_test"):
        if not os.access(os.path.join(ROOT, binary), os.X_OK):
            sys.exit(f"foundation: {binary} missing: run `bash scripts/build.sh` first")
    only = set(filter(None, args.only.split(",")))
    want = lambda name: not only or name in only
    start = time.perf_counter()
    machine()
    if want("parity"):
        parity_forward()
        parity_tokenizer()
    if want("evals"):
        threads_check(models_eval(args.repeats))
    if want("tokenizer"):
        tokenizer_speed()
    if want("read"):
        read_speed()
    if want("memory"):
        memory()
    if want("anchor") and not args.skip_anchor:
        anchor()
    emit({"bench": "done", "seconds": time.perf_counter() - start, "loadavg_1_5_15": loadavg(),
          "cmd": "bash bench/run_foundation.sh"})


if __name__ == "__main__":
    main()
