#!/bin/bash
# The measurement pass's cost on one H100 (GPU backend, WebGPU EP): the embedded tiny model at --target-bpw 2.25
# (measurement + plan + run) next to a plain run of the same method at W2, protocol calibration (128 windows),
# clip mse, in one session; the engine's own log line gives the measurement's seconds.
# Needs the node/ORT/Dawn set-up of mixtral_shaped.sh (call `setup` there first, or in the same call).
set -u
L=/tmp/l
export LOPRO_ORT_DIR=$L/o130/node_modules LOPRO_DAWN_NODE=$L/dawn.node
[ -f $L/dawn.node ] || { mkdir -p $L/o130 && tar -C $L/o130 -xJf .gpu/ort130.tar.xz && xz -dc .gpu/dawn.node.xz > $L/dawn.node; }
Q="$L/node .gpu/bench/lopro.js quantize fixtures/tiny --calib fixtures/text/train.txt --clip mse --ep webgpu --backend gpu"
$L/node .gpu/bench/lopro.js quantize fixtures/tiny --calib fixtures/text/train.txt --samples 4 --ep webgpu --backend gpu --out /tmp/warm > /dev/null 2>&1
if [ "${1:-}" = seven ]; then
  # One 7B-shaped block (random weights), LoPRo W2 plain vs --target-bpw 2.25 (minmax clip: the protocol's).
  timeout 120 $L/node .gpu/bench/synth_llama.js --out /tmp/s7 --blocks 1 --hidden 4096 --mlp 11008 --heads 32 --kv-heads 32 --tokenizer-from .gpu/tok > /dev/null 2>&1
  S="$L/node .gpu/bench/lopro.js quantize /tmp/s7 --calib fixtures/text/train.txt --ctx 512 --ep webgpu --backend gpu --no-keep-hessians"
  /usr/bin/time -f "7B-shaped plain W2 wall %e s" $S --bits 2 --out /tmp/s7plain > $OUT/s7plain.log 2>&1; grep -E "^time:" $OUT/s7plain.log; tail -1 $OUT/s7plain.log
  /usr/bin/time -f "7B-shaped target 2.25 wall %e s" $S --target-bpw 2.25 --out /tmp/s7target > $OUT/s7target.log 2>&1; grep -E "measurement pass|^time:" $OUT/s7target.log | cut -c1-200; tail -1 $OUT/s7target.log
  exit 0
fi
for i in 1 2; do
  /usr/bin/time -f "plain W2 wall %e s" $Q --bits 2 --out /tmp/plain$i > $OUT/plain$i.log 2>&1; tail -1 $OUT/plain$i.log
  /usr/bin/time -f "target 2.25 wall %e s" $Q --target-bpw 2.25 --out /tmp/target$i > $OUT/target$i.log 2>&1; grep -E "measurement pass|plan for" $OUT/target$i.log | cut -c1-200; tail -1 $OUT/target$i.log
done
