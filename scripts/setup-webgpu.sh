#!/usr/bin/env bash
# Prepares a software WebGPU adapter for Dawn (the `webgpu` package) on Debian bookworm: Mesa 25 lavapipe from
# bookworm-backports (bookworm's own Mesa 22 is too old for Dawn). Idempotent, non-interactive; run as root.
# Ends by printing the adapter Dawn sees (needs `pnpm install` first; skipped with a note otherwise).
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive

if [ "$(id -u)" != 0 ]; then echo "setup-webgpu: run as root" >&2; exit 1; fi

list=/etc/apt/sources.list.d/bookworm-backports.list
if ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
  echo 'deb http://deb.debian.org/debian bookworm-backports main' > "$list"
  apt-get update -qq
fi

# Installed already from backports (Mesa >= 25)? Then nothing to do.
have=$(dpkg-query -W -f='${Version}' mesa-vulkan-drivers 2>/dev/null || true)
if [ -z "$have" ] || dpkg --compare-versions "$have" lt 25; then
  apt-get update -qq
  apt-get install -y -qq -t bookworm-backports --no-install-recommends mesa-vulkan-drivers libvulkan1 >/dev/null
fi
echo "mesa-vulkan-drivers $(dpkg-query -W -f='${Version}' mesa-vulkan-drivers)"

# Adapter check through Dawn, from the backend package (where `webgpu` is a dependency).
pkg=packages/backend-webgpu
if [ -d "$pkg/node_modules/webgpu" ]; then
  (cd "$pkg" && node --input-type=module -e "
    import { create, globals } from 'webgpu';
    Object.assign(globalThis, globals);
    const gpu = create([]);
    const a = await gpu.requestAdapter();
    if (!a) { console.log('webgpu adapter: none'); process.exit(1); }
    const i = a.info ?? {};
    console.log('webgpu adapter:', [i.vendor, i.architecture, i.device, i.description].filter(Boolean).join(' / '));
    console.log('features:', [...a.features].sort().join(' '));
    console.log('maxStorageBufferBindingSize', a.limits.maxStorageBufferBindingSize, 'maxBufferSize', a.limits.maxBufferSize);
    process.exit(0);
  ")
else
  echo "webgpu adapter: not checked ($pkg/node_modules/webgpu missing: run pnpm install first)"
fi
