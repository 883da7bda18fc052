#!/usr/bin/env python3
"""deploy/ checked with real tools, then run as the manifests say.

1. `kubectl kustomize` renders both overlays; every object passes kubernetes-models' validate()
   (validate.mjs, the API's OpenAPI schemas).
2. `promtool check rules` and `promtool test rules` (an alert test per alert); the
   PrometheusRule in the manifests carries exactly deploy/base/monitoring/rules.yaml.
3. The coordinator and two workers start with exactly the command lines and environment the CPU
   overlay's StatefulSets give them ($(VAR) expanded from the ConfigMap, the Secret and the
   downward API), with three substitutions only, because this is one host and not a cluster:
   mount paths -> temporary directories, the Service's DNS name and the pods' 0.0.0.0 -> 127.0.0.1,
   fixed ports -> free ports. A job submitted with the Secret's token runs to the end through them.

Usage: deploy_test.py --bin-dir BUILD --shared SHARED
"""
import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
failures = []


def check(ok, what):
    print(("ok   " if ok else "FAIL ") + what, flush=True)
    if not ok:
        failures.append(what)


def render(overlay):
    out = subprocess.run(["kubectl", "kustomize", os.path.join(ROOT, "deploy/overlays", overlay)],
                         check=True, capture_output=True, text=True).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def find(objects, kind, name):
    return next(o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name)


def container_env(objects, container, pod_name):
    """The container's environment as Kubernetes builds it (envFrom first, then env)."""
    env = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(find(objects, "ConfigMap", source["configMapRef"]["name"])["data"])
        if "secretRef" in source:
            env.update(find(objects, "Secret", source["secretRef"]["name"])["stringData"])
    for e in container.get("env", []):
        if "value" in e:
            env[e["name"]] = e["value"]
        elif e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.name":
            env[e["name"]] = pod_name
        elif e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "status.podIP":
            env[e["name"]] = "127.0.0.1"
    return env


def expand(arg, env):
    return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m.group(1), m.group(0)),
                  arg)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin-dir", required=True)
    ap.add_argument("--shared", required=True)
    args = ap.parse_args()

    # 1. Render and validate.
    for overlay in ("cpu", "gpu"):
        objects = render(overlay)
        kinds = sorted({o["kind"] for o in objects})
        check({"StatefulSet", "Service", "ConfigMap", "Secret", "PersistentVolumeClaim",
               "ServiceMonitor", "PrometheusRule"} <= set(kinds), f"{overlay}: kinds {kinds}")
        r = subprocess.run(["node", os.path.join(HERE, "validate.mjs")], input=json.dumps(objects),
                           capture_output=True, text=True, cwd=HERE)
        print(r.stdout, end="")
        check(r.returncode == 0, f"{overlay}: every object valid ({len(objects)})")
        worker = find(objects, "StatefulSet", "quant-worker")
        limits = worker["spec"]["template"]["spec"]["containers"][0]["resources"].get("limits", {})
        check(("nvidia.com/gpu" in limits) == (overlay == "gpu"), f"{overlay}: GPU request")
    # A broken object is caught (the validator is not a rubber stamp).
    broken = render("cpu")
    find(broken, "StatefulSet", "quant-worker")["spec"]["replicas"] = "eight"
    r = subprocess.run(["node", os.path.join(HERE, "validate.mjs")], input=json.dumps(broken),
                       capture_output=True, text=True, cwd=HERE)
    check(r.returncode != 0 and "replicas" in r.stdout, "a broken StatefulSet is refused")

    # 2. Rules.
    mon = os.path.join(ROOT, "deploy/base/monitoring")
    for cmd in (["promtool", "check", "rules", "rules.yaml"],
                ["promtool", "test", "rules", "rules_test.yaml"]):
        r = subprocess.run(cmd, cwd=mon, capture_output=True, text=True)
        print(r.stdout + r.stderr, end="")
        check(r.returncode == 0, " ".join(cmd))
    rule = find(render("gpu"), "PrometheusRule", "quant")
    with open(os.path.join(mon, "rules.yaml")) as f:
        check(rule["spec"] == yaml.safe_load(f), "the PrometheusRule carries rules.yaml")
    tests = yaml.safe_load(open(os.path.join(mon, "rules_test.yaml")))
    tested = {t["alertname"] for group in tests["tests"] for t in group["alert_rule_test"]}
    alerts = {r["alert"] for g in rule["spec"]["groups"] for r in g["rules"]}
    check(alerts == tested, f"every alert has a unit test ({sorted(alerts)})")

    # 3. Run the CPU overlay's processes as the manifests say.
    objects = render("cpu")
    tmp = tempfile.mkdtemp(prefix="deploy_test_")
    procs = []
    try:
        mounts = {"/var/lib/quant": "state", "/etc/quant/token": "token", "/scratch": "scratch",
                  "/models": "models", "/out": "out", "/local-scratch": "local", "/dev/shm": "shm",
                  "/etc/quant/tls": "tls", "/etc/quant/worker-token": "worker-token"}
        for d in mounts.values():
            os.makedirs(os.path.join(tmp, d), exist_ok=True)
        for secret, d in (("quant-token", "token"), ("quant-worker-token", "worker-token")):
            with open(os.path.join(tmp, d, "token"), "w") as f:
                f.write(find(objects, "Secret", secret)["stringData"]["token"] + "\n")
        # TLS is on by default: the coordinator serves it and the workers verify it; the test
        # plays cert-manager (a CA and a server certificate for the Secret's three keys).
        coord_args = find(objects, "StatefulSet", "quant-coordinator")["spec"]["template"][
            "spec"]["containers"][0]["args"]
        worker_args = find(objects, "StatefulSet", "quant-worker")["spec"]["template"]["spec"][
            "containers"][0]["args"]
        check(any(a.startswith("--tls-cert=") for a in coord_args) and
              any(a.startswith("--worker-token-file=") for a in coord_args) and
              any(a.startswith("--tls-ca=") for a in worker_args) and
              any(a.startswith("--token-file=") for a in worker_args),
              "TLS and worker authentication on in the manifests")
        t = os.path.join(tmp, "tls")
        with open(os.path.join(t, "san.ext"), "w") as f:
            f.write("subjectAltName=DNS:quant-coordinator,IP:127.0.0.1\n")
        for cmd in (f"openssl req -x509 -newkey rsa:2048 -nodes -keyout {t}/ca.key -out {t}/ca.crt"
                    f" -days 2 -subj /CN=quant-test-ca",
                    f"openssl req -newkey rsa:2048 -nodes -keyout {t}/tls.key -out {t}/tls.csr"
                    f" -subj /CN=quant-coordinator && openssl x509 -req -in {t}/tls.csr -CA"
                    f" {t}/ca.crt -CAkey {t}/ca.key -CAcreateserial -out {t}/tls.crt -days 2"
                    f" -extfile {t}/san.ext"):
            r = subprocess.run(cmd, shell=True, capture_output=True, text=True)
            check(r.returncode == 0, "openssl: " + r.stderr[-300:])
        tls_ca = ["--tls-ca", os.path.join(t, "ca.crt")]
        # The model and its calibration text inside the coordinator's --roots (the /models mount).
        shutil.copytree(os.path.join(args.shared, "models/tiny-deepseek-v3"),
                        os.path.join(tmp, "models/tiny-deepseek-v3"))
        shutil.copy(os.path.join(args.shared, "data/calib/calib.txt"),
                    os.path.join(tmp, "models/calib.txt"))
        grpc_port = free_port()
        binaries = {"/usr/local/bin/quant-coordinator": "coordinator/service/quant-coordinator",
                    "/usr/local/bin/quant-worker": "worker/service/quant-worker"}

        def local(arg, ports):
            for path, d in sorted(mounts.items(), key=lambda kv: -len(kv[0])):
                arg = re.sub(r"(?<![\w/])" + re.escape(path) + r"(?=/|,|$)",
                             os.path.join(tmp, d), arg)
            arg = arg.replace("quant-coordinator:7070", f"127.0.0.1:{grpc_port}")
            for fixed, free in ports.items():
                arg = arg.replace(f"0.0.0.0:{fixed}", f"127.0.0.1:{free}")
                arg = re.sub(rf"^(--http-port=){fixed}$", rf"\g<1>{free}", arg)
            return arg.replace("--http-host=0.0.0.0", "--http-host=127.0.0.1")

        def start(kind_name, pod, ports):
            sts = find(objects, "StatefulSet", kind_name)
            c = sts["spec"]["template"]["spec"]["containers"][0]
            env = container_env(objects, c, pod)
            argv = [os.path.join(args.bin_dir, binaries[c["command"][0]])]
            argv += [local(expand(a, env), ports) for a in c["args"]]
            run_env = dict(os.environ)
            run_env.update({k: local(v, ports) for k, v in env.items()})
            print("start", pod, " ".join(argv), flush=True)
            log = open(os.path.join(tmp, pod + ".log"), "w")
            p = subprocess.Popen(argv, env=run_env, stdout=subprocess.PIPE, stderr=log, text=True)
            procs.append(p)
            return p, p.stdout.readline()

        http = {9090: free_port()}
        _, line = start("quant-coordinator", "quant-coordinator-0", {7070: grpc_port, **http})
        check(line.startswith("grpc "), f"the coordinator listens: {line.strip()}")
        health = urllib.request.urlopen(f"http://127.0.0.1:{http[9090]}/healthz").read()
        check(health == b"ok\n", "the coordinator answers /healthz")
        replicas = find(objects, "StatefulSet", "quant-worker")["spec"]["replicas"]
        for i in range(replicas):
            _, line = start("quant-worker", f"quant-worker-{i}", {9091: free_port()})
            check(line.startswith(f"worker quant-worker-{i} "), f"worker {i} registers: {line.strip()}")
        qctl = os.path.join(args.bin_dir, "coordinator/qctl/qctl")
        out_dir = os.path.join(tmp, "out/tiny-deepseek-v3-gsq2")
        submit = subprocess.run(
            [qctl, "submit", "--coordinator", f"127.0.0.1:{grpc_port}", *tls_ca, "--token-file",
             os.path.join(tmp, "token/token"), "--model",
             os.path.join(tmp, "models/tiny-deepseek-v3"), "--out", out_dir, "--method", "gsq",
             "--bits", "2", "--steps", "20", "--calib", os.path.join(tmp, "models/calib.txt"),
             "--calib-tokens", "8192", "--no-mse", "--no-eval",  # no-mse: GPTQ's search is not
             "--expert-shards", str(replicas)], capture_output=True, text=True)  # tested here
        check(submit.returncode == 0, "qctl submit with the Secret's token: " + submit.stdout +
              submit.stderr)
        watch = subprocess.run([qctl, "watch", "1", "--coordinator", f"127.0.0.1:{grpc_port}",
                                *tls_ca],
                               capture_output=True, text=True, timeout=900)
        print(watch.stdout[-600:], end="")
        check(watch.returncode == 0 and "succeeded" in watch.stdout, "the job succeeds")
        check(os.path.exists(os.path.join(out_dir, "model.safetensors.index.json")),
              "the checkpoint is written under the /out mount")
    finally:
        for p in procs:
            p.kill()
            p.wait()
        if not failures:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print("kept", tmp)
    if failures:
        print(f"{len(failures)} check(s) failed")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
