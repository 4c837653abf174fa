#!/bin/bash
# "One engine, two backends" on the device: the per-layer table of the GPU backend next to PyTorch's GPTQ and
# next to the code before the change (bundles of commit 0509ef4 in .gpu/old), then the 2-block 7B-shaped
# pipeline through the CLI and through the engine's IPC entry (as VS Code starts it), and the old CLI, all in
# one lease so the numbers compare. Build first, here: node bench/build-device-bundle.mjs (and the old bundles,
# bench/device/README.md §0e). Each step has a timeout; logs and JSON go to $OUT.
#   call 1, carry [.gpu/node.xz, .gl]:            bash bench/device/two_backends.sh setup
#   call 2, carry [.gpu/ort130.tar.xz, .gpu/dawn.node.xz, .gpu/bench, .gpu/old, .gpu/tok]:  … all  (= layers, then pipeline)
# (the tracked tree is ~41 MB of the 64 MiB a call carries: node and the ORT/Dawn binaries need two calls)
set -u
L=/tmp/l
export LOPRO_ORT_DIR=$L/o130/node_modules LOPRO_DAWN_NODE=$L/dawn.node
HP=(env GLIBC_TUNABLES=glibc.malloc.hugetlb=1)
step() { # name, timeout, command…
  local name=$1 t=$2; shift 2
  local s=$EPOCHREALTIME
  timeout "$t" "$@" > "$OUT/$name.log" 2>&1
  printf '%-16s rc=%s wall %.1f s\n' "$name" "$?" "$(awk "BEGIN{print $EPOCHREALTIME - $s}")"
}
case "$1" in
  setup)
    mkdir -p $L && xz -dc .gpu/node.xz > $L/node && chmod +x $L/node && for f in .gl/*.deb; do dpkg -x "$f" /; done && ldconfig
    $L/node --version; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
    ;;
  all)
    bash "$0" layers && bash "$0" pipeline
    ;;
  unpack)
    [ -f $L/dawn.node ] || { mkdir -p $L/o130 && tar -C $L/o130 -xJf .gpu/ort130.tar.xz && xz -dc .gpu/dawn.node.xz > $L/dawn.node; }
    ;;
  layers)
    bash "$0" unpack
    step torch 70 /opt/torch/.venv/bin/python bench/torch_gptq.py --bits 2 --json "$OUT/torch_gptq.json"
    step new_layers 130 "${HP[@]}" $L/node .gpu/bench/gpu_layers.js --backend gpu --methods rtn,gptq,lopro,lopro-mse,lopro-act,gptq-mse,gptq-act --bits 2 --peer "$OUT/torch_gptq.json" --out "$OUT"
    step old_layers 90 "${HP[@]}" $L/node .gpu/old/gpu_layers.js --ep webgpu --methods rtn,gptq,lopro --engines resident --r1svd dawn --bits 2 --peer "$OUT/torch_gptq.json" --out "$OUT/old"
    grep -h "^|" "$OUT/new_layers.log" "$OUT/old_layers.log" | cut -c1-220
    ;;
  pipeline)
    bash "$0" unpack
    S=(--method lopro --bits 2 --ctx 512 --calib fixtures/text/train.txt --ep webgpu)
    [ -f /tmp/s7/model.safetensors ] || step synth 45 $L/node .gpu/bench/synth_llama.js --out /tmp/s7 --blocks 2 --tokenizer-from .gpu/tok
    rm -rf /tmp/pg && mkdir -p /tmp/pg
    # The first run tokenizes train.txt into the cache: warm it so that every timed run finds it cached.
    step warm 60 $L/node .gpu/bench/lopro.js quantize /tmp/s7 --method rtn --samples 2 --ctx 64 --calib fixtures/text/train.txt --ep cpu --backend cpu --out /tmp/pg/warm
    step new_cli 70 "${HP[@]}" $L/node .gpu/bench/lopro.js quantize /tmp/s7 "${S[@]}" --backend gpu --out /tmp/pg/new_cli
    step new_ipc 70 $L/node .gpu/bench/ipc_run.js .gpu/bench/lopro.js /tmp/s7 --out /tmp/pg/new_ipc "${S[@]}" --backend gpu
    step old_cli 70 "${HP[@]}" $L/node .gpu/old/lopro.js quantize /tmp/s7 "${S[@]}" --out /tmp/pg/old_cli
    for r in new_cli new_ipc old_cli; do echo "$r: $(grep -h '^time:\|^backend\|^ipc run\|layers quantized on' "$OUT/$r.log" | tr '\n' ' ')"; python3 -c "import json; m=json.load(open('/tmp/pg/$r/run.json')); print('  run.json seconds', round(m['seconds'], 1), 'layers', len(m['layers']), 'bpw', round(sum(l['bpw']*l['rows']*l['cols'] for l in m['layers'])/sum(l['rows']*l['cols'] for l in m['layers']), 4), 'proxy loss sum', '%.4e' % sum(l['proxyLoss'] for l in m['layers']))"; done
    ;;
esac
