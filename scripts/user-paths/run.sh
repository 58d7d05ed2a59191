#!/usr/bin/env bash
# The user paths, from the packed tarballs (run after `pnpm build`): pack every package with `pnpm pack`,
# install the tarballs with plain npm into a blank project (optional dependencies omitted: no Dawn, no koffi),
# then (a) ESM and CommonJS scripts run the CPU backend and check the numbers, (b) a strict TypeScript consumer
# typechecks under nodenext, bundler and node10 (also without the optional GPU packages), (c) esbuild and Vite
# bundle a page using createBackend('auto') that headless Chromium runs (CPU and SwiftShader WebGPU), (d) an
# esbuild Node bundle, run where there is no node_modules, runs the CPU backend on 2 worker threads.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
HERE="$ROOT/scripts/user-paths"
PNPM=(npx -y pnpm@10.34.9)
ESBUILD="$ROOT/packages/backend-webgpu/node_modules/.bin/esbuild"
VITE="$ROOT/node_modules/.bin/vite"
TSC="$ROOT/node_modules/.bin/tsc"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/moba-user-paths.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
t0=$SECONDS
for p in core backend-cpu backend-webgpu backend-cuda testkit moba; do
  [ -f "$ROOT/packages/$p/dist/index.js" ] || { echo "!! packages/$p/dist is missing: run pnpm build first" >&2; exit 1; }
done
[ -f "$ROOT/packages/backend-cpu/dist/worker-source.js" ] && grep -q 'WORKER_SOURCE = "' "$ROOT/packages/backend-cpu/dist/worker-source.js" \
  || { echo "!! backend-cpu's dist has no embedded worker: run pnpm build" >&2; exit 1; }

echo "== [$((SECONDS - t0)) s] pack (pnpm pack: workspace:* becomes the version)"
(cd "$ROOT" && "${PNPM[@]}" -r --filter './packages/*' pack --pack-destination "$WORK/tgz" >/dev/null)
ls "$WORK/tgz"
if tar -xOzf "$WORK/tgz"/moba-ts-*.tgz package/package.json | grep -q 'workspace:'; then echo "!! a packed manifest keeps workspace:" >&2; exit 1; fi

echo "== [$((SECONDS - t0)) s] npm install of the tarballs into a blank project"
mkdir -p "$WORK/app"
cp "$HERE"/fixtures/* "$WORK/app/"
cd "$WORK/app"
echo '{ "name": "moba-user", "private": true, "version": "1.0.0" }' > package.json
npm install --omit=optional --no-audit --no-fund --loglevel=error "$WORK"/tgz/*.tgz
node -e '
const lock = require("./package-lock.json").packages;
const ours = Object.entries(lock).filter(([k]) => /node_modules\/(@moba\/[^/]+|moba-ts)$/.test(k));
const bad = ours.filter(([, v]) => !String(v.resolved).startsWith("file:"));
if (ours.length !== 6 || bad.length) { console.error("!! not every package came from a tarball:", JSON.stringify(ours)); process.exit(1); }
console.log("from tarballs:", ours.map(([k, v]) => `${k.replace("node_modules/", "")} <- ${v.resolved.replace(/.*\//, "")}`).join(", "));
for (const p of ["webgpu", "koffi"]) if (require("fs").existsSync(`node_modules/${p}`)) { console.error(`!! ${p} was installed`); process.exit(1); }'

echo "== [$((SECONDS - t0)) s] (a) ESM and CommonJS scripts"
node esm.mjs
node cjs.cjs

echo "== [$((SECONDS - t0)) s] (b) strict TypeScript consumer: nodenext, bundler, node10"
for r in nodenext bundler node10; do "$TSC" -p "tsconfig.$r.json" && echo "tsc $r: ok"; done
mkdir -p "$WORK/aside" && mv node_modules/@moba/backend-webgpu node_modules/@moba/backend-cuda "$WORK/aside/"
"$TSC" -p tsconfig.nodenext.json && echo "tsc nodenext without @moba/backend-webgpu and @moba/backend-cuda: ok"
mv "$WORK"/aside/* node_modules/@moba/

echo "== [$((SECONDS - t0)) s] (c) browser bundles (esbuild and Vite, default settings) in headless Chromium"
"$ESBUILD" page.js --bundle --format=esm --platform=browser --outfile=dist-esbuild/page.js --log-level=warning
cp index.html dist-esbuild/
"$VITE" build --logLevel warn --outDir dist-vite >/dev/null
echo "   bundled ($((SECONDS - t0)) s)"
node "$HERE/check-browser.mjs" "esbuild=$WORK/app/dist-esbuild" "vite=$WORK/app/dist-vite"

echo "== [$((SECONDS - t0)) s] (d) esbuild Node bundle, run without node_modules, CPU backend with threads: 2"
"$ESBUILD" node-bundle.mjs --bundle --format=esm --platform=node --outfile="$WORK/bundle/app.mjs" --log-level=warning
(cd "$WORK/bundle" && ls && node app.mjs)
echo "== [$((SECONDS - t0)) s] user paths: ok ($((SECONDS - t0)) s)"
