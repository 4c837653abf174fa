#!/bin/bash
# Issue 19 item 5 on one H100: a calibrated 32-block 7B-shaped run inside an 8 GiB memory cgroup beside the same run
# without a limit (same machine, same sitting), and one 70B-shaped block (Llama-2-70B: hidden 8192, MLP 28672, 64/8
# heads) with its Hessian cache kept. LoPRo W2, protocol calibration 128 × 512, WebGPU EP, GPU backend; every log line
# time-stamped; peaks from the engine (getrusage), /usr/bin/time and the cgroup's memory.peak.
#   carry [.gpu/node.xz, .gl, .gpu/bench, .gpu/tok, .gpu/ort130.tar.xz, .gpu/dawn.node.xz, .gpu/calib.txt] (move
#   test/golden/cases and fixtures/text/train.txt aside for the call, 64 MiB; .gpu/calib.txt = head -c 1200000 of it):
#   CALIB=.gpu/calib.txt BLOCKS=1 bash bench/device/long_runs.sh setup setup-ort seventy
#   then (one call, all carries)                               bash bench/device/long_runs.sh setup setup-ort synth7 seven-both
#   and again until both runs are complete                     bash bench/device/long_runs.sh seven-both
set -u
L=/tmp/l
O=${OUT:-/tmp}
export LOPRO_ORT_DIR=$L/o130/node_modules LOPRO_DAWN_NODE=$L/dawn.node
stamp() { python3 -u -c "import sys,time; t=time.time()
for l in sys.stdin: print('%7.1f %s' % (time.time()-t, l), end='', flush=True)"; }
Q=(--method lopro --bits 2 --calib ${CALIB:-fixtures/text/train.txt} --ctx 512 --ep webgpu --backend gpu)
summary() { grep -E "memory plan|below this|spilled|block (1|16|32)/32 done|time:|peak|layers quantized|bits/weight|Maximum resident|Elapsed|E_|rror" "$1" | cut -c1-260 | tail -24; }
# A cgroup v2 child with memory.max (and no swap), or v1's memory controller: the command runs inside it.
in_cgroup() {
  local limit=$1
  shift
  if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
    local cg=/sys/fs/cgroup/lopro-$limit
    mkdir -p $cg && echo "+memory" > /sys/fs/cgroup/cgroup.subtree_control 2>/dev/null
    echo $limit > $cg/memory.max && { echo 0 > $cg/memory.swap.max 2>/dev/null || true; }
    bash -c "echo \$\$ > $cg/cgroup.procs && exec \"\$@\"" _ "$@"
    echo "cgroup $cg: memory.max $(cat $cg/memory.max), memory.peak $(cat $cg/memory.peak 2>/dev/null), events: $(tr '\n' ' ' < $cg/memory.events)"
  else
    local cg=/sys/fs/cgroup/memory/lopro-$limit
    mkdir -p $cg && echo $limit > $cg/memory.limit_in_bytes
    bash -c "echo \$\$ > $cg/cgroup.procs && exec \"\$@\"" _ "$@"
    echo "cgroup $cg: limit $(cat $cg/memory.limit_in_bytes), max_usage $(cat $cg/memory.max_usage_in_bytes), failcnt $(cat $cg/memory.failcnt)"
  fi
}
for step in "$@"; do
  echo "##### $step $(date -u +%FT%TZ)"
  case "$step" in
    setup)
      mkdir -p $L && xz -dc .gpu/node.xz > $L/node && chmod +x $L/node && for f in .gl/*.deb; do dpkg -x "$f" /; done && ldconfig
      $L/node --version; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader; free -g | head -2; df -h /tmp | tail -1
      ;;
    probe)
      # Can this machine make a memory cgroup? (the 8 GiB run needs one)
      in_cgroup 1G bash -c 'cat /proc/self/cgroup; python3 -c "b=bytearray(1536*2**20); print(\"allocated 1.5 GiB inside a 1 GiB cgroup?!\")"; echo "exit $?"'
      ;;
    setup-ort)
      mkdir -p $L/o130 && tar -C $L/o130 -xJf .gpu/ort130.tar.xz && xz -dc .gpu/dawn.node.xz > $L/dawn.node
      ;;
    seventy)
      timeout 200 $L/node .gpu/bench/synth_llama.js --out /tmp/s70 --blocks ${BLOCKS:-2} --distinct 1 --hidden 8192 --mlp 28672 --heads 64 --kv-heads 8 --tokenizer-from .gpu/tok
      nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv,noheader -lms 2000 > $O/smi70.csv 2>&1 &
      S=$!
      timeout ${RUN_S:-420} /usr/bin/time -v env GLIBC_TUNABLES=glibc.malloc.hugetlb=1 $L/node .gpu/bench/lopro.js quantize /tmp/s70 "${Q[@]}" \
        --memory-budget-mb ${BUDGET70:-30517} --out /tmp/s70run 2>&1 | stamp > $O/s70.log
      kill $S
      summary $O/s70.log
      ls -la /tmp/s70run/hessians; sort -t, -k3 -n $O/smi70.csv | tail -1
      ;;
    synth7)
      [ -f /tmp/s32/model.safetensors ] || timeout 300 $L/node .gpu/bench/synth_llama.js --out /tmp/s32 --blocks 32 --distinct 2 --tokenizer-from .gpu/tok
      ls -la /tmp/s32; df -h /tmp | tail -1
      ;;
    seven-both)
      # The unlimited run (a budget that holds everything in memory) and the same run inside an 8 GiB cgroup with the
      # budget its plan fits into it, side by side on the one GPU (the same contention for both), each stopped at the
      # call's deadline and resumed by the next call (--resume: the engine sums the seconds of its sessions).
      left=$(( ${DEADLINE:-560} - SECONDS ))
      ( timeout $left /usr/bin/time -v env GLIBC_TUNABLES=glibc.malloc.hugetlb=1 $L/node .gpu/bench/lopro.js quantize /tmp/s32 "${Q[@]}" \
          --memory-budget-mb 65536 --no-keep-hessians --out /tmp/s7free --resume 2>&1 | stamp > $O/s7free.log ) &
      in_cgroup 8G timeout $left /usr/bin/time -v env GLIBC_TUNABLES=glibc.malloc.hugetlb=1 $L/node .gpu/bench/lopro.js quantize /tmp/s32 "${Q[@]}" \
        --memory-budget-mb ${BUDGET:-7168} --no-keep-hessians --out /tmp/s7cg --resume 2>&1 | stamp > $O/s7cg.log
      wait
      for d in s7free s7cg; do echo "=== $d"; summary $O/$d.log; done
      for d in s7free s7cg; do ls /tmp/$d/native >/dev/null 2>&1 && (cd /tmp/$d/native && find . -type f | sort | xargs sha256sum | sha256sum | sed "s|-|$d native/|"); done
      ;;
  esac
done
