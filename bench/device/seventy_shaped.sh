#!/bin/bash
# Issue 19: one 70B-shaped block (Llama-2-70B: hidden 8192, MLP 28672, 64/8 heads; random weights) quantized by the
# real pipeline on one H100 — LoPRo W2, protocol calibration 128 × 512, WebGPU EP, GPU backend — with every log line
# time-stamped (the block's time, projected to 80 blocks) and the host's peak (the engine's getrusage figure and
# /usr/bin/time's). Needs the node/ORT/Dawn set-up of generate_speed.sh (setup-node, setup-ort130) on the same machine:
#   carry [.gpu/node.xz, .gl, .gpu/bench, .gpu/tok]   bash bench/device/generate_speed.sh setup-node
#   carry [.gpu/ort130.tar.xz, .gpu/dawn.node.xz]     bash bench/device/generate_speed.sh setup-ort130 && bash bench/device/seventy_shaped.sh
set -u
L=/tmp/l
export LOPRO_ORT_DIR=$L/o130/node_modules LOPRO_DAWN_NODE=$L/dawn.node
stamp() { python3 -u -c "import sys,time; t=time.time()
for l in sys.stdin: print('%7.1f %s' % (time.time()-t, l), end='', flush=True)"; }
free -g | head -2
timeout 200 $L/node .gpu/bench/synth_llama.js --out /tmp/s70 --blocks 1 --hidden 8192 --mlp 28672 --heads 64 --kv-heads 8 --tokenizer-from .gpu/tok
nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv,noheader -lms 2000 > ${OUT:-/tmp}/smi70.csv 2>&1 &
S=$!
timeout ${RUN_S:-360} /usr/bin/time -v env GLIBC_TUNABLES=glibc.malloc.hugetlb=1 $L/node .gpu/bench/lopro.js quantize /tmp/s70 --method lopro --bits 2 \
  --calib fixtures/text/train.txt --ctx 512 --ep webgpu --backend gpu --no-keep-hessians --out /tmp/s70run 2>&1 | stamp > ${OUT:-/tmp}/s70.log
kill $S
grep -E "block 0|time:|runtime:|peak|layers quantized|bits/weight|Maximum resident|Elapsed|error|Error" ${OUT:-/tmp}/s70.log | cut -c1-240 | tail -30
sort -t, -k3 -n ${OUT:-/tmp}/smi70.csv | tail -1
