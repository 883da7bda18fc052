#!/usr/bin/env python3
"""The project's layers (docs/architecture.md), checked on the sources and the binaries.

Each part may include only the parts listed for it; a file of a part that includes another part
is a violation, printed as one line (file:line: includes X, which <part> may not). With
--no-torch BINARY, the binary's dynamic libraries (ldd) must not include libtorch or c10; with
--torch-control BINARY, that binary must (qctl links torch for its embedded runs), so the check
is known to see torch where it is. --self-test plants a violation in a temporary tree and
expects the checker to find it.
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile

# part (a directory, or one file) -> the parts its includes may name. Longest match wins.
# tests/ (helpers of tests) is allowed to test, fuzz and bench files everywhere.
ALLOWED = {
    "common": {"common"},
    "proto": {"proto", "common", "job"},  # task_wire.h: the leased task (torch-free)
    "storage": {"storage", "common"},
    "job": {"job", "storage", "common"},
    "kernels": {"kernels", "common"},
    "coordinator/state": {"coordinator/state", "job", "common"},
    "coordinator/service": {"coordinator/service", "coordinator/state", "job", "storage",
                            "common", "proto"},
    # qctl's service commands: what `qctl submit` needs is the job layer, never the task code.
    "coordinator/qctl/service_commands.cc": {"coordinator/qctl/commands.h", "job", "storage",
                                             "common", "proto"},
    "coordinator/qctl/commands.h": {"job", "common"},
    "coordinator/qctl": {"coordinator/qctl", "worker", "job", "storage", "common", "proto",
                         "kernels"},
    # The numerics know nothing of tasks or the service (DESIGN.md section 2).
    "worker/tokenizer": {"worker/tokenizer", "common"},
    "worker/model": {"worker/model", "job", "storage", "common", "kernels"},
    "worker/quant": {"worker/quant", "worker/model", "job", "storage", "common", "kernels"},
    # Departure: eval's RTN anchor (fake quantization while evaluating) uses the quantizer.
    "worker/eval": {"worker/eval", "worker/model", "worker/tokenizer", "worker/quant", "job",
                    "storage", "common"},
    "worker/exchange": {"worker/exchange", "worker/model", "common"},
    "worker/tasks": {"worker/tasks", "worker/model", "worker/tokenizer", "worker/quant",
                     "worker/eval", "worker/exchange", "job", "storage", "common", "kernels"},
    "worker/runner": {"worker/runner", "worker/tasks", "worker/model", "worker/tokenizer",
                      "worker/quant", "worker/eval", "worker/exchange", "job", "storage",
                      "common", "kernels"},
    "worker/service": {"worker", "job", "storage", "common", "proto"},
}
# What a part's tests, fuzzers and benches may include besides (tests/ is allowed to all of them).
TEST_EXTRA = {
    "kernels": {"storage"},  # the pack kernels are checked against storage's packing
}
PARTS = ["common", "proto", "storage", "job", "kernels", "coordinator", "worker", "tests"]
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"')
SOURCE = re.compile(r"\.(h|cc|cu|cuh)$")
TEST_FILE = re.compile(r"_(test|fuzz|bench)\.(cc|cu)$|_test_util\.h$")


def part_of(rel, table):
    best = None
    for key in table:
        if rel == key or rel.startswith(key + "/"):
            if best is None or len(key) > len(best):
                best = key
    return best


def names_part(target):
    """The part an include names: "job/plan.h" -> job; files are matched like parts."""
    for key in sorted(ALLOWED, key=len, reverse=True):
        if target == key or target.startswith(key + "/"):
            return key
    top = target.split("/", 1)[0]
    return top if top in PARTS else None  # absl/, nlohmann/, gtest/...: outside the project


def allowed(target, rules):
    return any(target == r or target.startswith(r + "/") for r in rules)


def check_tree(root):
    problems = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".") and d != "build"]
        for name in sorted(filenames):
            if not SOURCE.search(name):
                continue
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root)
            part = part_of(rel, ALLOWED)
            if part is None:
                continue
            rules = set(ALLOWED[part])
            if TEST_FILE.search(name):
                rules |= {"tests"} | TEST_EXTRA.get(part, set())
            with open(path, encoding="utf-8", errors="replace") as f:
                for number, line in enumerate(f, 1):
                    m = INCLUDE.match(line)
                    if not m or names_part(m.group(1)) is None:
                        continue
                    if not allowed(m.group(1), rules):
                        problems.append(f"{rel}:{number}: includes {m.group(1)}, which {part} "
                                        "may not (tests/layers/check_layers.py, "
                                        "docs/architecture.md)")
    return problems


def links_torch(binary):
    out = subprocess.run(["ldd", binary], capture_output=True, text=True, check=True).stdout
    return [l.split()[0] for l in out.splitlines() if re.search(r"libtorch|libc10", l)]


def self_test():
    with tempfile.TemporaryDirectory() as d:
        os.makedirs(os.path.join(d, "job"))
        os.makedirs(os.path.join(d, "coordinator/service"))
        with open(os.path.join(d, "job/ok.cc"), "w") as f:
            f.write('#include "job/plan.h"\n#include "absl/status/status.h"\n')
        with open(os.path.join(d, "job/bad.cc"), "w") as f:
            f.write('#include "job/plan.h"\n#include "worker/model/model.h"\n')
        with open(os.path.join(d, "coordinator/service/bad.cc"), "w") as f:
            f.write('#include "worker/runner/embedded_job.h"\n')
        problems = check_tree(d)
        want = ["job/bad.cc:2: includes worker/model/model.h",
                "coordinator/service/bad.cc:1: includes worker/runner/embedded_job.h"]
        for w in want:
            if not any(p.startswith(w) for p in problems):
                print(f"self-test: the planted violation {w!r} was not found: {problems}")
                return False
        if len(problems) != len(want):
            print(f"self-test: expected {len(want)} violations, found {problems}")
            return False
    return True


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--src", required=True)
    ap.add_argument("--no-torch", action="append", default=[])
    ap.add_argument("--torch-control", action="append", default=[])
    args = ap.parse_args()
    ok = self_test()
    problems = check_tree(args.src)
    for p in problems:
        print(p)
    ok = ok and not problems
    for b in args.no_torch:
        found = links_torch(b)
        if found:
            print(f"{b}: links {', '.join(found)}; it must not link torch")
            ok = False
        else:
            print(f"{os.path.basename(b)}: no libtorch or c10 among its libraries")
    for b in args.torch_control:
        if not links_torch(b):
            print(f"{b}: the control binary shows no torch: the ldd check cannot see it")
            ok = False
    print("layers: ok" if ok else "layers: FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
