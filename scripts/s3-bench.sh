#!/usr/bin/env bash
# S3 throughput on loopback: s3rver (tests/s3) with the S3 client's multipart upload and ranged
# reads (build/storage/s3_bench) next to `aws s3 cp` up and down of the same size, in one run.
# Usage: scripts/s3-bench.sh [MiB]   (after scripts/build.sh; default 256 MiB)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MIB="${1:-256}"
WORK="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT
PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
node "$ROOT/tests/s3/node_modules/s3rver/bin/s3rver.js" -d "$WORK/data" -a 127.0.0.1 -p "$PORT" \
  --silent --configure-bucket bench > "$WORK/s3rver.log" 2>&1 &
export AWS_ACCESS_KEY_ID=S3RVER AWS_SECRET_ACCESS_KEY=S3RVER AWS_DEFAULT_REGION=us-east-1
for _ in $(seq 50); do
  /usr/bin/aws --endpoint-url "http://127.0.0.1:$PORT" s3 ls s3://bench > /dev/null 2>&1 && break
  sleep 0.2
done
"${BUILD_DIR:-$ROOT/build}/storage/s3_bench" --endpoint "http://127.0.0.1:$PORT" --bucket bench \
  --mib "$MIB"
head -c "$((MIB << 20))" /dev/urandom > "$WORK/file.bin"
start=$(date +%s.%N)
/usr/bin/aws --endpoint-url "http://127.0.0.1:$PORT" s3 cp "$WORK/file.bin" s3://bench/cli.bin \
  > /dev/null
mid=$(date +%s.%N)
/usr/bin/aws --endpoint-url "http://127.0.0.1:$PORT" s3 cp s3://bench/cli.bin "$WORK/back.bin" \
  > /dev/null
end=$(date +%s.%N)
cmp -s "$WORK/file.bin" "$WORK/back.bin" && same=true || same=false
python3 -c "
up=$mid-$start; down=$end-$mid
print('{\"bench\":\"aws s3 cp\",\"mib\":$MIB,\"upload_s\":%.3f,\"upload_mib_s\":%.1f,\"download_s\":%.3f,\"download_mib_s\":%.1f,\"read_back_equal\":$same}' % (up, $MIB/up, down, $MIB/down))" | sed 's/True/true/;s/False/false/'
