#!/bin/bash
# Issue 18 on one H100: prefill/decode speed of a float, a plain RTN W2 g128 (MatMulNBits bits = 2, no LoPRo parts)
# and a LoPRo W2 model (1B-shaped, random weights: hidden 2048, MLP 5632, 32/4 heads, 8 of TinyLlama's 22 blocks —
# the float32 graph of more blocks passes the 2 GiB protobuf limit), on the WebGPU EP (ORT 1.30) and the CUDA EP
# (ORT 1.29 + its CUDA 13 provider), side by side in one process per EP; the exports' sizes; a 7B-shaped block's
# export size; and an export checked in Python onnxruntime against the engine's logits (bench/device/onnx_check.py).
# Build here first: node bench/build-device-bundle.mjs, .gpu/check (bench/dump_logits.ts, see RESULTS), .gpu/ort129.tar.xz
# and .gpu/prov_sm90.so.xz (shared/guides/gpu-device.md). The working tree travels too (64 MiB in all), so the calls
# are small and follow each other on the warm machine (what they unpacked stays there):
#   carry [.gpu/node.xz, .gl, .gpu/bench, .gpu/tok]            bash bench/device/generate_speed.sh setup-node
#   carry [.gpu/ort130.tar.xz, .gpu/dawn.node.xz]                bash bench/device/generate_speed.sh setup-ort130 webgpu
#   carry [.gpu/check]                                           bash bench/device/generate_speed.sh check seven
#   carry [.gpu/ort129.tar.xz]                                   bash bench/device/generate_speed.sh setup-ort129
#   carry [.gpu/prov_sm90.so.xz]                                 bash bench/device/generate_speed.sh cuda
set -u
L=/tmp/l
LOPRO="$L/node .gpu/bench/lopro.js"
SPEED="$L/node .gpu/bench/generate_speed.js --prompt-tokens 128 --new-tokens 64 --repeats 3"
MODELS="float=/tmp/g1b rtn2=/tmp/g1b-rtn2-onnx lopro2=/tmp/g1b-lopro2-onnx"
export LOPRO_DAWN_NODE=$L/dawn.node
for step in "$@"; do
  echo "##### $step $(date -u +%FT%TZ)"
  case "$step" in
    setup-node)
      mkdir -p $L && xz -dc .gpu/node.xz > $L/node && chmod +x $L/node && for f in .gl/*.deb; do dpkg -x "$f" /; done && ldconfig
      $L/node --version; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
      ;;
    setup-ort130)
      mkdir -p $L/o130 && tar -C $L/o130 -xJf .gpu/ort130.tar.xz && xz -dc .gpu/dawn.node.xz > $L/dawn.node
      ;;
    webgpu)
      export LOPRO_ORT_DIR=$L/o130/node_modules
      timeout 120 $L/node .gpu/bench/synth_llama.js --out /tmp/g1b --blocks 8 --hidden 2048 --mlp 5632 --heads 32 --kv-heads 4 --tokenizer-from .gpu/tok
      Q="--calib fixtures/text/train.txt --samples 32 --ctx 512 --ep webgpu --backend gpu --no-keep-hessians --quiet"
      timeout 200 $LOPRO quantize /tmp/g1b --method rtn --bits 2 $Q --out /tmp/g1b-rtn2 | tail -1
      timeout 300 $LOPRO quantize /tmp/g1b --method lopro --bits 2 $Q --out /tmp/g1b-lopro2 | tail -1
      for m in rtn2 lopro2; do
        timeout 120 $LOPRO export /tmp/g1b-$m --format onnx --out /tmp/g1b-$m-onnx --quiet
        python3 -c "import json;d=json.load(open('/tmp/g1b-$m-onnx/onnx_export.json'));print('$m', d['linears'], d['size'])"
      done
      du -b /tmp/g1b/model.safetensors
      timeout 300 $SPEED --ep webgpu --json $OUT/speed_webgpu.json $MODELS
      ;;
    c4)
      # 2-bit codes in the 4-bit container (export option fourBitContainer) for the CUDA EP, whose 2-bit kernel fails;
      # a 2-block 1B-shaped model when the 8-block one of `webgpu` is not on this machine.
      export LOPRO_ORT_DIR=$L/o130/node_modules
      if [ ! -d /tmp/g1b-lopro2 ]; then
        timeout 120 $L/node .gpu/bench/synth_llama.js --out /tmp/g1b --blocks 2 --hidden 2048 --mlp 5632 --heads 32 --kv-heads 4 --tokenizer-from .gpu/tok
        Q="--calib fixtures/text/train.txt --samples 32 --ctx 512 --ep webgpu --backend gpu --no-keep-hessians --quiet"
        for m in rtn lopro; do timeout 200 $LOPRO quantize /tmp/g1b --method $m --bits 2 $Q --out /tmp/g1b-${m}2 | tail -1; done
      fi
      for m in rtn2 lopro2; do timeout 120 $L/node .gpu/bench/export_onnx_variant.js /tmp/g1b-$m /tmp/g1b-$m-c4 --four-bit-container; done
      ;;
    check)
      python3 bench/device/onnx_check.py .gpu/check/tiny_w2_float .gpu/check/tiny_w2_int8 .gpu/check/dump
      ;;
    setup-ort129)
      mkdir -p $L/o129 && tar -C $L/o129 -xJf .gpu/ort129.tar.xz
      ;;
    cuda)
      D=$L/o129/node_modules/onnxruntime-node/bin/napi-v6/linux/x64
      [ -f .gpu/prov_sm90.so.xz ] && xz -dc .gpu/prov_sm90.so.xz > $D/libonnxruntime_providers_cuda.so
      NV=/opt/torch/.venv/lib/python3.12/site-packages/nvidia
      export LOPRO_ORT_DIR=$L/o129/node_modules LD_LIBRARY_PATH=$D:$NV/cu13/lib:$NV/cudnn/lib:/usr/local/cuda-13.0/lib64:${LD_LIBRARY_PATH:-}
      timeout 400 $SPEED --ep cuda --json $OUT/speed_cuda.json ${CUDA_MODELS:-$MODELS}
      ;;
    seven)
      export LOPRO_ORT_DIR=$L/o130/node_modules
      # One 7B-shaped block (Llama-2-7B: hidden 4096, MLP 11008, 32/32 heads): its LoPRo W2 export against the float checkpoint.
      timeout 120 $L/node .gpu/bench/synth_llama.js --out /tmp/s7 --blocks 1 --hidden 4096 --mlp 11008 --heads 32 --kv-heads 32 --tokenizer-from .gpu/tok
      timeout 200 $LOPRO quantize /tmp/s7 --method lopro --bits 2 --calib fixtures/text/train.txt --samples 32 --ctx 512 --ep webgpu --backend gpu --no-keep-hessians --quiet --out /tmp/s7-lopro2 | tail -1
      timeout 120 $LOPRO export /tmp/s7-lopro2 --format onnx --out /tmp/s7-onnx --quiet
      python3 -c "import json;d=json.load(open('/tmp/s7-onnx/onnx_export.json'));print('7B-shaped block', d['linears'], d['size'])"
      du -b /tmp/s7/model.safetensors /tmp/s7-onnx/model.onnx /tmp/s7-lopro2/native/model.safetensors
      ;;
  esac
done
