#!/bin/bash
# Issue 5 on the device: the REAL pipeline (`lopro quantize`, bundle .gpu/bench/lopro.js) timed end to end.
#   bash bench/device/pipeline_gpu.sh base    # base W2 lopro: webgpu + 16 workers, cpu EP + 16 workers, cpu EP main thread only
#   bash bench/device/pipeline_gpu.sh synth   # a 2-block LLaMA-2-7B-shaped random model (bench/synth_llama.ts), webgpu + workers
#   bash bench/device/pipeline_gpu.sh synth-ab  # the same, group layers concurrent vs sequential, in one session
#   bash bench/device/pipeline_gpu.sh synth-env-ab "ENV A" "ENV B"  # the same model under two environments, one session
#   bash bench/device/pipeline_gpu.sh synth32 [SECONDS]  # the full 32-block 7B-shaped model (2 distinct blocks repeated),
#        stopped after SECONDS (default 560: a device call is ≤ 600 s); then `synth32-resume` in the next call
#        continues the same run (--resume) — the two parts' walls add up to the end-to-end time
# Needs /tmp/l/node, /tmp/l/o130/node_modules, /tmp/l/models/base (bench/device/README.md). Logs under $OUT.
set -u
export LOPRO_ORT_DIR=/tmp/l/o130/node_modules
L=".gpu/bench/lopro.js"
q() { # name, timeout, env..., -- args
  local name=$1 t=$2; shift 2
  local envs=(); while [ "$1" != "--" ]; do envs+=("$1"); shift; done; shift
  local s=$EPOCHREALTIME
  env "${envs[@]}" timeout "$t" /tmp/l/node $L quantize "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  printf '%-22s rc=%s wall %.1f s | %s | %s\n' "$name" "$rc" "$(awk "BEGIN{print $EPOCHREALTIME - $s}")" "$(grep -h '^time:' "$OUT/$name.log")" "$(grep -h 'layers quantized on\|^model:' "$OUT/$name.log" | tr '\n' ' ')"
}
# Per-stage sums over a run's layers (run.json's layer seconds; dotted keys are sub-stages of their prefix).
sums() {
  python3 -c "
import json, collections; m=json.load(open('/tmp/pg/$1/run.json')); t=collections.Counter()
for l in m['layers']:
  for k, v in l['seconds'].items(): t[k] += v
print('$1 stage sums:', {k: round(v, 1) for k, v in sorted(t.items(), key=lambda kv: -kv[1])})"
}
case "${1:-base}" in
  base)
    B=(/tmp/l/models/base --method lopro --bits 2 --ctx 512 --calib fixtures/text/train.txt)
    q base_webgpu 180 X=1 -- "${B[@]}" --ep webgpu --out /tmp/pg/base_webgpu
    q base_cpu_workers 180 X=1 -- "${B[@]}" --ep cpu --out /tmp/pg/base_cpu_workers
    q base_cpu_main 180 LOPRO_GPTQ_WORKER=none -- "${B[@]}" --ep cpu --out /tmp/pg/base_cpu_main
    ;;
  synth)
    /tmp/l/node .gpu/bench/synth_llama.js --out /tmp/s7 --blocks 2 --tokenizer-from "${TOK:-/tmp/l/models/base}"
    q synth7b_webgpu 480 X=1 -- /tmp/s7 --method lopro --bits 2 --ctx 512 --calib fixtures/text/train.txt --ep webgpu --out /tmp/pg/s7
    python3 -c "
import json; m=json.load(open('/tmp/pg/s7/run.json')); L=m['layers']
for l in L: print(l['name'], l['rows'], 'x', l['cols'], {k: round(v, 2) for k, v in l['seconds'].items()})" >> "$OUT/synth7b_webgpu.log" 2>&1
    sums s7 | tee -a "$OUT/synth7b_webgpu.log"
    grep -h "^runtime\|^dawn\|^time" "$OUT/synth7b_webgpu.log"
    ;;
  synth-ab)
    # The same 2-block model, group layers concurrent (the GPU default) and one after the other, side by side.
    /tmp/l/node .gpu/bench/synth_llama.js --out /tmp/s7 --blocks 2 --tokenizer-from "${TOK:-/tmp/l/models/base}"
    S=(/tmp/s7 --method lopro --bits 2 --ctx 512 --calib fixtures/text/train.txt --ep webgpu)
    q synth7b_concurrent 280 LOPRO_CONCURRENT_LAYERS=1 -- "${S[@]}" --out /tmp/pg/s7c
    q synth7b_sequential 280 LOPRO_CONCURRENT_LAYERS=0 -- "${S[@]}" --out /tmp/pg/s7s
    cmp /tmp/pg/s7c/native/model.safetensors /tmp/pg/s7s/native/model.safetensors && echo "outputs identical"
    ;;
  synth-env-ab)
    # The same 2-block model with two environments, side by side in one session (device runs vary ±10–15 %
    # between leases): bash pipeline_gpu.sh synth-env-ab "X=1" "LOPRO_GPTQ_LOOP_FORM=direct LOPRO_GPTQ_HINV=host"
    /tmp/l/node .gpu/bench/synth_llama.js --out /tmp/s7 --blocks 2 --tokenizer-from "${TOK:-/tmp/l/models/base}"
    S=(/tmp/s7 --method lopro --bits 2 --ctx 512 --calib fixtures/text/train.txt --ep webgpu)
    read -r -a EA <<< "${2:-X=1}"; read -r -a EB <<< "${3:-X=1}"
    q synth7b_env_a 280 "${EA[@]}" -- "${S[@]}" --out /tmp/pg/s7a
    q synth7b_env_b 280 "${EB[@]}" -- "${S[@]}" --out /tmp/pg/s7b
    grep -h "^runtime\|^dawn" "$OUT"/synth7b_env_*.log
    # Per-stage sums over the 14 layers (run.json's layer seconds), A then B.
    for d in s7a s7b; do sums $d; done | tee -a "$OUT/synth7b_stage_sums.txt"
    ;;
  synth32|synth32-resume)
    # Huge pages as the extension starts the engine (protocol/engine_env.ts).
    H32=(GLIBC_TUNABLES=glibc.malloc.hugetlb=1)
    S=(/tmp/s32 --method lopro --bits 2 --ctx 512 --calib fixtures/text/train.txt --ep webgpu --out /tmp/pg/s32)
    if [ "$1" = synth32 ]; then
      rm -rf /tmp/pg/s32
      [ -f /tmp/s32/model.safetensors ] || /tmp/l/node .gpu/bench/synth_llama.js --out /tmp/s32 --blocks 32 --distinct 2 --tokenizer-from "${TOK:-/tmp/l/models/base}"
      q synth32_part1 "${2:-560}" "${H32[@]}" -- "${S[@]}"
    else
      q synth32_part2 580 "${H32[@]}" -- "${S[@]}" --resume
      sums s32 | tee -a "$OUT/synth32_part2.log"
    fi
    grep -h "^runtime\|^dawn\|^time\|resum\|block 3[01]\|^model:" "$OUT/$1"*.log "$OUT"/synth32_part*.log 2>/dev/null | sort -u | head -20
    ;;
esac
