#!/usr/bin/env bash
# Bundles the bench for the GPU machine (no Node, no internet there): .device/bench.mjs, .device/sdpa.py,
# .device/sdpa-decode.py and .device/sdpa_common.py (torch: the training and the decode bench).
#   bash bench/bundle.sh          (packages/backend-{cuda,webgpu}/scripts/bundle.sh call it; they also make
#                                  .device/ with Node, koffi, Dawn and, for CUDA, .device/kernels)
# The commit (with "+dirty" when tracked files are modified) is embedded, since the machine gets no .git.
# Run there with carry [".device"]:
#   source .device/enter.sh && OUT=$OUT node .device/bench.mjs --backend cuda      (or --backend webgpu)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
mkdir -p .device
commit=$(git rev-parse HEAD 2>/dev/null || echo unknown)
if [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then commit="$commit+dirty"; fi
"$root/packages/backend-webgpu/node_modules/.bin/esbuild" bench/run.ts --bundle --platform=node --format=esm \
  --external:koffi --external:webgpu --conditions=@moba/source --log-level=warning \
  --banner:js="import { createRequire as __cr } from 'node:module'; const require = __cr(import.meta.url);" \
  --define:process.env.MOBA_BENCH_COMMIT="\"$commit\"" \
  --outfile=.device/bench.mjs
cp bench/sdpa.py bench/sdpa-decode.py bench/sdpa_common.py .device/
ls -la .device/bench.mjs .device/sdpa.py .device/sdpa-decode.py .device/sdpa_common.py
