#!/usr/bin/env bash
# Bundles the CUDA device check for the GPU machine (no Node, no internet there):
#   bash packages/backend-cuda/scripts/bundle.sh        (from anywhere; works in the repo root)
# Makes .device/ (Node, koffi; ../shared/device/prepare.sh), then .device/cuda/gpu-check.mjs with the kernels
# in .device/kernels and the golden cases in .device/cases (the bundle finds both at ../kernels and ../cases,
# as the sources do). Run there with carry [".device"]:
#   source .device/enter.sh && MOBA_REQUIRE=cuda node .device/cuda/gpu-check.mjs
# Also bundles the bench (bench/bundle.sh): .device/bench.mjs + .device/sdpa.py, run there as
#   source .device/enter.sh && OUT=$OUT node .device/bench.mjs --backend cuda
set -euo pipefail
root=$(cd "$(dirname "$0")/../../.." && pwd)
cd "$root"
shared=${MOBA_SHARED:-$root/../shared}
bash "$shared/device/prepare.sh" packages/backend-cuda
mkdir -p .device/cuda
rm -rf .device/kernels .device/cases
cp -r packages/backend-cuda/kernels .device/kernels
cp -r packages/testkit/cases .device/cases
"$root/packages/backend-webgpu/node_modules/.bin/esbuild" packages/backend-cuda/scripts/gpu-check.ts --bundle --platform=node --format=esm \
  --external:koffi --external:webgpu --conditions=@moba/source --log-level=warning \
  --banner:js="import { createRequire as __cr } from 'node:module'; const require = __cr(import.meta.url);" \
  --outfile=.device/cuda/gpu-check.mjs
ls -la .device/cuda/gpu-check.mjs
bash bench/bundle.sh
echo "bundled: run with carry [\".device\"]: source .device/enter.sh && MOBA_REQUIRE=cuda node .device/cuda/gpu-check.mjs"
echo "  the bench: source .device/enter.sh && OUT=\$OUT node .device/bench.mjs --backend cuda"
