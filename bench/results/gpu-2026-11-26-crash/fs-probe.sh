set -x
T=$(python3 -c 'import torch,os;print(os.path.dirname(torch.__file__))')/lib
which g++ ld; g++ --version | head -1; ld --version | head -1; g++ -print-prog-name=ld
g++ -dumpspecs | grep -n -A2 "as-needed\|^\*link:" | head -20
L="-L$T -Wl,-rpath,$T -ltorch -ltorch_cpu -lc10"
g++ -std=c++20 bench/results/gpu-2026-11-26-crash/fs-probe.cc -o /tmp/t0 $L && readelf -d /tmp/t0 | grep NEEDED; /tmp/t0; echo "rc $?"
g++ -std=c++20 -Wl,--push-state,--no-as-needed,-lstdc++,--pop-state bench/results/gpu-2026-11-26-crash/fs-probe.cc -o /tmp/t1 $L && readelf -d /tmp/t1 | grep NEEDED; /tmp/t1; echo "rc $?"
g++ -std=c++20 bench/results/gpu-2026-11-26-crash/fs-probe.cc -o /tmp/t2 -Wl,--no-as-needed -lstdc++ $L && readelf -d /tmp/t2 | grep NEEDED; /tmp/t2; echo "rc $?"
g++ -v -std=c++20 -Wl,--push-state,--no-as-needed,-lstdc++,--pop-state bench/results/gpu-2026-11-26-crash/fs-probe.cc -o /tmp/t1 $L 2>&1 | grep collect2 | tr ' ' '\n' | grep -n "stdc\|as-needed\|torch\|push\|pop\|^-L" | head -30
LD_DEBUG=bindings LD_BIND_NOW=1 /tmp/t1 2>&1 | grep remove_all
LD_DEBUG=bindings LD_BIND_NOW=1 /tmp/t0 2>&1 | grep remove_all
T=$(python3 -c 'import torch,os;print(os.path.dirname(torch.__file__))')/lib
G=/opt/gcc/bin/g++
$G --version | head -1
P=$($G -print-file-name=libstdc++.so); echo "libstdc++.so of $G: $P"; ls -la "$P"; head -c 400 "$P" | strings | head -8
L="-L$T -Wl,-rpath,$T -Wl,--no-as-needed -ltorch -ltorch_cpu -lc10"
for flag in "" "-Wl,--push-state,--no-as-needed,-lstdc++,--pop-state" "-Wl,--push-state,--no-as-needed,-l:libstdc++.so.6,--pop-state"; do
  echo "== flag: ${flag:-none}"
  $G -std=c++20 $flag bench/results/gpu-2026-11-26-crash/fs-probe.cc -o /tmp/t $L && readelf -d /tmp/t | grep NEEDED | head -3; /tmp/t; echo "rc $?"
done
