#!/bin/bash
# Issue 20 (speed) on one H100: the 2-block 7B-shaped pipeline and the per-layer table, this tree's bundles
# (.gpu/bench) next to an older commit's (.gpu/old), A/B in one lease, with PyTorch's GPTQ as the peer. The GPU's busy %
# is sampled by nvidia-smi around every step (the new engine also prints its own per phase).
# Build here first: node bench/build-device-bundle.mjs (→ .gpu/bench), the older commit's bundles in .gpu/old
# (git worktree add --detach W <commit>; node bench/build-device-bundle.mjs there; copy lopro, gpu_layers, cpu_worker,
# synth_llama), .gpu/{node.xz,dawn.node.xz,ort130.tar.xz,tok,calib.txt} as in bench/device/README.md.
#   call 1, carry [.gpu/node.xz, .gl]:                                   bash bench/device/speed.sh setup
#   call 2, right after, carry [.gpu/ort130.tar.xz, .gpu/dawn.node.xz, .gpu/bench, .gpu/old, .gpu/tok, .gpu/calib.txt]:
#       bash bench/device/speed.sh unpack synth2 pipe            (ROUNDS=2: old, new, old, new; PROF=1: V8 CPU profiles)
#       bash bench/device/speed.sh unpack torch layers           (METHODS=rtn,lopro_v SHAPES=…)
#       bash bench/device/speed.sh unpack synth32 full           (METHOD=lopro|lopro_v; `full` again in the next call
#                                                                 finishes a run the 600 s call limit stopped)
set -u
L=/tmp/l
O=${OUT:-/tmp}
export LOPRO_ORT_DIR=$L/o130/node_modules LOPRO_DAWN_NODE=$L/dawn.node
HP=(env GLIBC_TUNABLES=glibc.malloc.hugetlb=1)
CALIB=${CALIB:-.gpu/calib.txt}
step() { # name, timeout, command…: output to $O/name.log, GPU samples to $O/name.smi.csv
  local name=$1 t=$2
  shift 2
  local s=$EPOCHREALTIME
  nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv,noheader,nounits -lms 200 > "$O/$name.smi.csv" 2>&1 &
  local smi=$!
  timeout "$t" "$@" 2>&1 | python3 -u -c "import sys,time; t=time.time()
for l in sys.stdin: print('%7.1f %s' % (time.time()-t, l), end='', flush=True)" > "$O/$name.log"
  local rc=${PIPESTATUS[0]}
  kill $smi
  printf '%-14s rc=%s wall %6.1f s  GPU busy mean %s %%\n' "$name" "$rc" "$(awk "BEGIN{print $EPOCHREALTIME - $s}")" \
    "$(awk -F', ' '{s+=$2; n++} END{if(n) printf "%.0f (%d samples)", s/n, n}' "$O/$name.smi.csv")"
}
for st in "$@"; do
  case "$st" in
    setup)
      mkdir -p $L && xz -dc .gpu/node.xz > $L/node && chmod +x $L/node && for f in .gl/*.deb; do dpkg -x "$f" /; done && ldconfig
      $L/node --version; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader; nproc
      ;;
    unpack)
      [ -f $L/dawn.node ] || { mkdir -p $L/o130 && tar -C $L/o130 -xJf .gpu/ort130.tar.xz && xz -dc .gpu/dawn.node.xz > $L/dawn.node; }
      ;;
    synth2)
      [ -f /tmp/s7/model.safetensors ] || step synth 60 $L/node .gpu/bench/synth_llama.js --out /tmp/s7 --blocks 2 --tokenizer-from .gpu/tok
      ;;
    pipe)
      S=(--method ${METHOD:-lopro} --bits 2 --ctx 512 --calib $CALIB --ep webgpu --backend gpu)
      for r in $(seq 1 ${ROUNDS:-2}); do
        for v in ${VERSIONS:-old new}; do
          b=.gpu/bench
          [ $v = old ] && b=.gpu/old
          rm -rf /tmp/pg_$v$r
          step pipe${METHOD:+_$METHOD}_$v$r 90 "${HP[@]}" $L/node ${PROF:+--cpu-prof --cpu-prof-dir=$O/prof_$v$r} $b/lopro.js quantize /tmp/s7 "${S[@]}" --out /tmp/pg_$v$r
          grep -h "time:\|runtime\|GPU busy\|dawn (" "$O/pipe${METHOD:+_$METHOD}_$v$r.log" | cut -c1-330
          python3 - /tmp/pg_$v$r/run.json <<'PY'
import json, sys, collections
m = json.load(open(sys.argv[1]))
L = m['layers']
print('  run.json seconds', round(m['seconds'], 1), 'layers', len(L), 'proxy loss sum', '%.4e' % sum(l['proxyLoss'] for l in L))
st = collections.Counter()
for l in L:
    for k, v in l.get('seconds', {}).items(): st[k] += v
print('  layer stage sums (s):', ', '.join('%s %.2f' % (k, v) for k, v in st.most_common()))
PY
        done
      done
      for d in /tmp/pg_*[0-9]; do (cd $d/native && find . -type f | sort | xargs sha256sum | sha256sum | sed "s|-|$d|"); done
      ;;
    xtx)
      # the statistics graphs' XᵀX alone, Gemm(transA) vs MatMul(Transpose(X), X), at the 7B shapes (device input; a host
      # tick per batch makes each batch wait for the GPU)
      for n in 11008 4096; do
        for w in gemm matmul; do
          step xtx_${w}_$n 60 $L/node .gpu/bench/xtx_probe.js --way $w --n $n --rows 4352 --device-input --host-tick --batches 6
          grep -h "batch 5\|total" "$O/xtx_${w}_$n.log"
        done
      done
      ;;
    synth32)
      # the 32-block 7B-shaped model: two distinct blocks repeated (the generator, not the disk, is the slow part)
      [ -f /tmp/s32/model.safetensors ] || step synth32 300 $L/node .gpu/bench/synth_llama.js --out /tmp/s32 --blocks 32 --distinct 2 --tokenizer-from .gpu/tok
      ;;
    pick)
      # the full run takes the faster of the two bundles of the last `pipe` round (SAME=1: only if their native outputs
      # are byte-identical; without it, a change that moves float rounding competes on time, and the proxy-loss sums
      # printed by `pipe` say whether it quantized alike)
      same=1
      [ -n "${SAME:-}" ] && [ "$(cd /tmp/pg_old1/native && find . -type f | sort | xargs sha256sum | sha256sum)" != "$(cd /tmp/pg_new1/native && find . -type f | sort | xargs sha256sum | sha256sum)" ] && same=0
      if [ $same = 1 ] && python3 -c "import json,sys; sys.exit(0 if json.load(open('/tmp/pg_new1/run.json'))['seconds'] < json.load(open('/tmp/pg_old1/run.json'))['seconds'] else 1)"; then
        echo "full runs use .gpu/bench"; else echo "full runs use .gpu/old"; cp .gpu/old/*.js .gpu/bench/; fi
      ;;
    full)
      # the whole 32-block run (METHOD, default lopro), stopped at the call's DEADLINE (s since the script started) and
      # continued by the next call's `full` (--resume: run.json's seconds add up the sessions' committed time). BUNDLE=.gpu/old
      # runs the older commit's bundle, TAG names its output apart (/tmp/full_<method><tag>), so an A/B of the first blocks
      # can run before the full run
      M=${METHOD:-lopro}
      F=full_$M${TAG:-}
      n=$(ls $O/$F[0-9]*.log 2>/dev/null | wc -l)
      step $F$n $(( ${DEADLINE:-560} - SECONDS )) "${HP[@]}" $L/node ${BUNDLE:-.gpu/bench}/lopro.js quantize /tmp/s32 --method $M --bits 2 --ctx 512 \
        --calib $CALIB --ep webgpu --backend gpu --no-keep-hessians --resume --out /tmp/$F
      grep -h "time:\|runtime:\|GPU busy\|model:\|run finished\|kept\|block [0-9]*/32$" "$O/$F$n.log" | cut -c1-330
      [ -f /tmp/$F/run.json ] && python3 - /tmp/$F/run.json <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
print('  run.json seconds', round(m['seconds'], 1), 'layers', len(m['layers']))
PY
      ;;
    cmp)
      # per-layer proxy losses of two runs' layers in common (A/B: the same quantization within float rounding?)
      python3 - /tmp/full_${METHOD:-lopro}${TAG:-}/run.json /tmp/full_${METHOD:-lopro}/run.json <<'PY'
import json, sys
a, b = ({l['name']: l['proxyLoss'] for l in json.load(open(f))['layers']} for f in sys.argv[1:3])
common = [k for k in a if k in b]
rel = [abs(a[k] - b[k]) / abs(a[k]) for k in common]
print('  proxy loss, %d layers in common: max rel diff %.3e, sums %.6e vs %.6e' % (len(common), max(rel) if rel else float('nan'), sum(a[k] for k in common), sum(b[k] for k in common)))
PY
      ;;
    torch)
      step torch 90 /opt/torch/.venv/bin/python bench/torch_gptq.py --bits 2 --json "$O/torch_gptq.json"
      ;;
    layers)
      for v in ${VERSIONS:-old new}; do
        b=.gpu/bench
        [ $v = old ] && b=.gpu/old
        step layers_$v ${LAYERS_S:-200} "${HP[@]}" $L/node $b/gpu_layers.js --backend gpu --methods ${METHODS:-rtn,lopro_v} --bits 2 ${SHAPES:+--shapes $SHAPES} $([ -f "$O/torch_gptq.json" ] && echo --peer "$O/torch_gptq.json") --out "$O/$v"
        grep -h "^|" "$O/layers_$v.log" | cut -c1-240
      done
      ;;
  esac
done
