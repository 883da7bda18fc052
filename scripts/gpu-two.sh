#!/usr/bin/env bash
# Issue 13 on a two-GPU machine (nvidia-h100-x2), from the repository root, carrying .debs and
# .gpu-data: builds the service and the NCCL exchange against the pip torch and NCCL
# (scripts/gpu-build.sh), then, one process per GPU (CUDA_VISIBLE_DEVICES), with NVLink
# multicast off:
#   1. nccl_check expert-parallel: tiny-deepseek-v3's MoE layer by a gang of 2 GPUs, each holding
#      its experts, against one GPU (bit-equal?);
#   2. nccl_check watchdog: a stopped member fails the other's all-to-all within 5 s;
#   3. nccl_check bandwidth: the Kimi-K2-shaped token exchange against ncclAlltoAll;
#   4. the GSQ step of a Kimi-K2 share: 48 experts on one GPU, then 24 + 24 on two at once;
#   5. a job through quant-coordinator and two GPU workers (gangs of 2 over NCCL) against the
#      same job through one GPU worker: codes compared tensor by tensor, KL of both.
# Usage: bash scripts/gpu-two.sh OUTDIR
set -uo pipefail
OUT="${1:?usage: gpu-two.sh OUTDIR}"
mkdir -p "$OUT"
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
DATA="${GPU_DATA:-.gpu-data}"   # the shared models and data, carried (deepseek is enough)
export QUANT_SHARED_DIR="$PWD/$DATA"
LOG="$OUT/two-gpu.txt"
nvidia-smi --query-gpu=index,name,memory.total --format=csv | tee "$LOG"
nvidia-smi topo -m >> "$LOG" 2>&1
if ! bash scripts/gpu-build.sh nccl_check quant-coordinator quant-worker \
    qctl gsq_kimi_bench > "$OUT/build.txt" 2>&1; then
  tail -60 "$OUT/build.txt"
  exit 1
fi
RUNENV="$(grep '^run with: ' "$OUT/build.txt" | sed 's/^run with: //')"
eval "$RUNENV"
B=build-gpu
two() {  # two() MODE [args]: rank 0 on GPU 0, rank 1 on GPU 1
  local dir; dir="$(mktemp -d)"
  CUDA_VISIBLE_DEVICES=0 "$B/worker/exchange/nccl_check" --rank 0 --size 2 --dir "$dir" "$@" &
  local p0=$!
  CUDA_VISIBLE_DEVICES=1 "$B/worker/exchange/nccl_check" --rank 1 --size 2 --dir "$dir" "$@"
  local r1=$?
  wait $p0; local r0=$?
  echo "ranks exit $r0 $r1"
}
echo "== lonely (one GPU: a member that never comes)" | tee -a "$LOG"
CUDA_VISIBLE_DEVICES=0 "$B/worker/exchange/nccl_check" --rank 0 --size 2 --dir "$(mktemp -d)" \
  --mode lonely --timeout 3 2>&1 | tee -a "$LOG"
echo "== expert-parallel" | tee -a "$LOG"
two --mode expert-parallel --model $DATA/models/tiny-deepseek-v3 2>&1 | tee -a "$LOG"
echo "== watchdog" | tee -a "$LOG"
two --mode watchdog --timeout 5 2>&1 | tee -a "$LOG"
echo "== bandwidth" | tee -a "$LOG"
two --mode bandwidth --iters 10 2>&1 | tee -a "$LOG" "$OUT/bandwidth.jsonl"
echo "== GSQ step: 48 experts on one GPU, 24 + 24 on two" | tee -a "$LOG"
for bits in 2 3; do
  CUDA_VISIBLE_DEVICES=0 "$B/kernels/gsq_kimi_bench" --experts 48 --bits "$bits" --steps 10 \
    | sed 's/^/one-gpu /' | tee -a "$LOG"
  CUDA_VISIBLE_DEVICES=0 "$B/kernels/gsq_kimi_bench" --experts 24 --bits "$bits" --steps 10 \
    > "$OUT/g0.json" &
  CUDA_VISIBLE_DEVICES=1 "$B/kernels/gsq_kimi_bench" --experts 24 --bits "$bits" --steps 10 \
    > "$OUT/g1.json"
  wait
  sed 's/^/two-gpus gpu0 /' "$OUT/g0.json" | tee -a "$LOG"
  sed 's/^/two-gpus gpu1 /' "$OUT/g1.json" | tee -a "$LOG"
done
rm -f "$OUT/g0.json" "$OUT/g1.json"
echo "== the service: two GPU workers against one" | tee -a "$LOG"
JOB=(--model $DATA/models/tiny-deepseek-v3 --method gsq --bits 3 --device cuda)
service_run() {  # service_run NAME WORKERS SHARDS
  local name=$1 workers=$2 shards=$3 dir="/tmp/two-$1"
  rm -rf "$dir"; mkdir -p "$dir"
  "$B/coordinator/service/quant-coordinator" --state "$dir/state.db" > "$dir/coordinator.out" &
  local cpid=$!
  until grep -q '^http' "$dir/coordinator.out" 2>/dev/null; do sleep 0.1; done
  local addr; addr="$(sed -n 's/^grpc //p' "$dir/coordinator.out")"
  local pids=()
  for ((g = 0; g < workers; ++g)); do
    CUDA_VISIBLE_DEVICES=$g "$B/worker/service/quant-worker" --coordinator "$addr" --id "gpu$g" \
      --device cuda --exchange-timeout 120 2> "$dir/worker$g.log" > /dev/null &
    pids+=($!)
  done
  local start; start=$(date +%s)
  "$B/coordinator/qctl/qctl" submit --coordinator "$addr" "${JOB[@]}" --expert-shards "$shards" \
    --out "$dir/out" > /dev/null
  "$B/coordinator/qctl/qctl" watch 1 --coordinator "$addr" > "$dir/watch.txt" 2>&1
  echo "$name: $(tail -1 "$dir/watch.txt"), $(( $(date +%s) - start )) s" | tee -a "$LOG"
  "$B/coordinator/qctl/qctl" logs 1 --coordinator "$addr" > "$OUT/logs-$name.txt" 2>&1
  cp "$dir/watch.txt" "$OUT/watch-$name.txt"
  kill "${pids[@]}" "$cpid" 2>/dev/null; wait 2>/dev/null
}
service_run one-worker 1 1
service_run two-workers 2 2
env -u LD_LIBRARY_PATH python3 - /tmp/two-one-worker/out /tmp/two-two-workers/out <<'PY' | tee -a "$LOG"
import json, sys
from safetensors.torch import load_file
import glob
a_dir, b_dir = sys.argv[1], sys.argv[2]
a, b = {}, {}
for f in glob.glob(a_dir + "/*.safetensors"): a.update(load_file(f))
for f in glob.glob(b_dir + "/*.safetensors"): b.update(load_file(f))
diff_tensors, diff_elems, total = 0, 0, 0
for k, t in a.items():
    u = b[k]
    n = (t != u).sum().item() if t.dtype.is_floating_point or True else 0
    total += t.numel()
    if n:
        diff_tensors += 1
        diff_elems += n
print(json.dumps({"tensors": len(a), "same_names": sorted(a) == sorted(b),
                  "tensors_differing": diff_tensors, "elements_differing": diff_elems,
                  "elements": total}))
for d in (a_dir, b_dir):
    e = json.load(open(d + "/report.json"))["eval"]
    print(d, "KL", e["kl"], "EAR", e["ear"], "ppl", e["ppl"])
PY
