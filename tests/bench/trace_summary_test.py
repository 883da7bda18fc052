#!/usr/bin/env python3
"""bench/trace_summary.py on a small hand-made Kineto trace: kernels and copies are charged to
the scope that was open when they were launched (matched by correlation id), overlapping kernels
count once in the busy time, phases and layers come from the scope names, and a file that is not
JSON is one error line and a non-zero exit."""
import json
import os
import subprocess
import sys
import tempfile
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "bench"))
import trace_summary  # noqa: E402


def scope(name, ts, dur):
    return {"ph": "X", "cat": "user_annotation", "name": name, "ts": ts, "dur": dur}


def launch(corr, ts, name, gpu_ts, dur, cat="kernel"):
    return [{"ph": "X", "cat": "cuda_runtime", "name": "cudaLaunchKernel", "ts": ts, "dur": 2,
             "args": {"correlation": corr}},
            {"ph": "X", "cat": cat, "name": name, "ts": gpu_ts, "dur": dur,
             "args": {"correlation": corr}}]


TRACE = {"traceEvents": [
    scope("L0/calibrate", 0, 100), scope("L0/gsq[0/2]", 100, 300),
    scope("probe-pass/L1/calibrate", 400, 50), scope("eval", 450, 50),
    *launch(1, 10, "k_cal", 15, 20),
    # two GSQ kernels launched inside L0/gsq, running on the GPU after its scope closed and
    # overlapping each other: busy 30 us, time 40 us.
    *launch(2, 150, "k_gsq", 410, 20), *launch(3, 160, "k_gsq", 420, 20),
    *launch(4, 170, "Memcpy DtoH", 440, 5, cat="gpu_memcpy"),
    *launch(5, 460, "k_eval", 470, 10),
    *launch(6, 900, "k_late", 905, 7),  # launched outside every scope
    {"ph": "i", "cat": "marker", "name": "ignored", "ts": 3},
]}


class TraceSummaryTest(unittest.TestCase):
    def test_charges_gpu_work_to_the_launching_scope(self):
        s = trace_summary.summarize(TRACE, top=10)
        phases = {p["phase"]: p for p in s["phases"]}
        self.assertAlmostEqual(phases["gsq"]["gpu_s"], 45e-6)
        self.assertAlmostEqual(phases["gsq"]["gpu_busy_s"], 35e-6)  # 410-440 and 440-445
        self.assertEqual(phases["gsq"]["gpu_events"], 3)
        self.assertEqual(phases["gsq"]["copies"], 1)
        self.assertAlmostEqual(phases["gsq"]["copies_s"], 5e-6)
        self.assertAlmostEqual(phases["calibrate"]["wall_s"], 100e-6)
        self.assertAlmostEqual(phases["probe"]["wall_s"], 50e-6)
        self.assertEqual(phases["eval"]["gpu_events"], 1)
        self.assertEqual(phases["outside the job's scopes"]["gpu_events"], 1)
        layers = {l["layer"]: l for l in s["layers"]}
        self.assertEqual(sorted(layers), [0, 1])
        self.assertAlmostEqual(layers[0]["gpu_s"]["gsq"], 45e-6)
        self.assertEqual(s["gpu_events"], 6)
        self.assertEqual(s["top_kernels"][0]["name"], "k_gsq")
        self.assertEqual(s["top_kernels"][0]["count"], 2)

    def test_bad_file_is_one_line(self):
        with tempfile.TemporaryDirectory() as tmp:
            bad = os.path.join(tmp, "t.json")
            with open(bad, "w") as f:
                f.write("{not json")
            done = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "trace_summary.py"),
                                   bad], capture_output=True, text=True)
            self.assertNotEqual(done.returncode, 0)
            self.assertEqual(done.stdout, "")
            self.assertEqual(len(done.stderr.strip().splitlines()), 1)
            self.assertIn("t.json", done.stderr)


if __name__ == "__main__":
    unittest.main()
