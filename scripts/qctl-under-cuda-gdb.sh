#!/usr/bin/env bash
# qctl under cuda-gdb (the GPU machine has no gdb; cuda-gdb debugs host code too), for scripts
# that run qctl through $QCTL: each call's output and, on a crash, its backtrace and threads go to
# $GDB_OUT/gdb-<n>.txt; a crash exits 139 with the tail of that file on stderr.
# Usage: REAL_QCTL=build-gpu/coordinator/qctl/qctl GDB_OUT=DIR QCTL=scripts/qctl-under-cuda-gdb.sh \
#          python3 bench/slq_per_expert_additivity.py ...
set -uo pipefail
n=$(ls "$GDB_OUT"/gdb-*.txt 2>/dev/null | wc -l)
cuda-gdb -q -batch -ex run -ex bt -ex "info threads" --args "$REAL_QCTL" "$@" \
  > "$GDB_OUT/gdb-$n.txt" 2>&1
if grep -q "received signal" "$GDB_OUT/gdb-$n.txt"; then
  tail -60 "$GDB_OUT/gdb-$n.txt" >&2
  exit 139
fi
# A normal exit: qctl's own status (gdb prints it in octal: "exited with code 01").
code=$(sed -n 's/.*exited with code \([0-9]*\)\].*/\1/p' "$GDB_OUT/gdb-$n.txt" | tail -1)
exit $((8#${code:-0}))
