#!/bin/bash
# A Mixtral-8x7B-shaped model (random weights: hidden 4096, experts 8 × 14336 top-2, 32/8 heads; 2 blocks on
# disk) quantized by the real pipeline on one H100 (LoPRo W2, protocol calibration 128 × 512, WebGPU EP, GPU
# backend), every log line time-stamped so the per-block time can be read off and projected to 32 blocks; the
# host peak comes from the engine's own report (getrusage maxRSS) and from the parent's view of the child.
# Build here first: node bench/build-device-bundle.mjs and the artefacts of bench/device/README.md ("two calls").
#   call 1, carry [.gpu/node.xz, .gl]:                                  bash bench/device/mixtral_shaped.sh setup
#   call 2, carry [.gpu/ort130.tar.xz, .gpu/dawn.node.xz, .gpu/bench, .gpu/tok]:  bash bench/device/mixtral_shaped.sh run
set -u
L=/tmp/l
export LOPRO_ORT_DIR=$L/o130/node_modules LOPRO_DAWN_NODE=$L/dawn.node
stamp() { python3 -u -c "import sys,time; t=time.time()
for l in sys.stdin: print('%7.1f %s' % (time.time()-t, l), end='', flush=True)"; }
case "$1" in
  setup)
    mkdir -p $L && xz -dc .gpu/node.xz > $L/node && chmod +x $L/node && for f in .gl/*.deb; do dpkg -x "$f" /; done && ldconfig
    $L/node --version; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader; free -g | head -2
    ;;
  run)
    [ -f $L/dawn.node ] || { mkdir -p $L/o130 && tar -C $L/o130 -xJf .gpu/ort130.tar.xz && xz -dc .gpu/dawn.node.xz > $L/dawn.node; }
    timeout 120 $L/node .gpu/bench/synth_llama.js --out /tmp/mx8 --blocks 2 --hidden 4096 --mlp 14336 --heads 32 --kv-heads 8 --experts 8 --topk 2 --tokenizer-from .gpu/tok 2>&1 | tee $OUT/synth.log
    timeout 60 $L/node .gpu/bench/lopro.js quantize /tmp/mx8 --method rtn --samples 2 --ctx 64 --calib fixtures/text/train.txt --ep cpu --backend cpu --out /tmp/warm > /dev/null 2>&1
    nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv,noheader -lms 1000 > $OUT/smi.csv 2>&1 & S=$!
    timeout ${RUN_S:-400} python3 -c "import resource,subprocess,sys; r=subprocess.run(sys.argv[1:]).returncode; print('child peak RSS GiB %.2f rc %d' % (resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss/2**20, r))" \
      env GLIBC_TUNABLES=glibc.malloc.hugetlb=1 $L/node .gpu/bench/lopro.js quantize /tmp/mx8 --method lopro --bits 2 --ctx 512 --calib fixtures/text/train.txt --ep webgpu --backend gpu ${QARGS:-} --out /tmp/mxrun 2>&1 | stamp > $OUT/quantize.log
    kill $S
    grep -E "block [0-9]+/|time:|runtime:|peak|child|layers quantized|bits/weight|error|Error" $OUT/quantize.log | cut -c1-260 | tail -40
    cp /tmp/mxrun/run.json $OUT/ 2>/dev/null
    ;;
esac
