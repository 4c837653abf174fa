#!/usr/bin/env bash
# A WebGPU device on the CPU for the fused-kernel tests (test/unit/perf/gptq_fused.test.ts): Dawn (the
# `webgpu` npm package) over SwiftShader, the Vulkan-on-CPU driver that Debian's chromium ships in
# /usr/lib/chromium (vk_swiftshader_icd.json), plus the Vulkan loader (libvulkan1) Dawn opens.
# The same chromium drives the UI e2e later. Idempotent.
set -euo pipefail
if [ ! -f /usr/lib/chromium/vk_swiftshader_icd.json ] || ! ldconfig -p | grep -q 'libvulkan.so.1 '; then
  SUDO=; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium libvulkan1 >/dev/null
fi
