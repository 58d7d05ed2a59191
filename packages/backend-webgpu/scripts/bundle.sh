#!/usr/bin/env bash
# Bundles the WebGPU device check for the GPU machine (Dawn over Vulkan there; no Node, no internet):
#   bash packages/backend-webgpu/scripts/bundle.sh
# then run with carry [".device"]: source .device/enter.sh && node .device/webgpu/gpu-check.mjs
# Also bundles the bench (bench/bundle.sh): .device/bench.mjs + .device/sdpa.py, run there as
#   source .device/enter.sh && OUT=$OUT node .device/bench.mjs --backend webgpu
set -euo pipefail
root=$(cd "$(dirname "$0")/../../.." && pwd)
cd "$root"
shared=${MOBA_SHARED:-$root/../shared}
bash "$shared/device/prepare.sh" packages/backend-webgpu
mkdir -p .device/webgpu
rm -rf .device/cases && cp -r packages/testkit/cases .device/cases
"$root/packages/backend-webgpu/node_modules/.bin/esbuild" packages/backend-webgpu/scripts/gpu-check.ts --bundle --platform=node --format=esm \
  --external:webgpu --conditions=@moba/source --log-level=warning \
  --banner:js="import { createRequire as __cr } from 'node:module'; const require = __cr(import.meta.url);" \
  --outfile=.device/webgpu/gpu-check.mjs
ls -la .device/webgpu/gpu-check.mjs
bash bench/bundle.sh
