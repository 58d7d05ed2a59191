#!/usr/bin/env bash
# Compiles every CUDA kernel of @moba/backend-cuda with nvcc, warnings as errors: the sm80 path for sm_80 and
# sm_90, and the sm90 (Hopper) path for sm_90a with -DMOBA_SM90 (packages/backend-cuda/src/path.ts). CI has nvcc
# but no GPU; at run time the same sources are compiled by NVRTC. Exits non-zero on any error.
#   bash scripts/check-cuda-kernels.sh            (NVCC=/path/to/nvcc to choose the compiler)
set -uo pipefail
cd "$(dirname "$0")/.."
nvcc=${NVCC:-nvcc}
if ! command -v "$nvcc" >/dev/null 2>&1; then echo "check-cuda-kernels: nvcc not found (set NVCC)" >&2; exit 2; fi
dir=packages/backend-cuda/kernels
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
fail=0; n=0
for f in "$dir"/*.cu; do
  for target in sm_80 sm_90 sm_90a:-DMOBA_SM90=1; do
    arch=${target%%:*}; defs=()
    [ "$arch" != "$target" ] && defs=("${target#*:}")
    n=$((n + 1))
    if "$nvcc" -arch="$arch" --std=c++17 -Werror all-warnings -I "$dir" -DMOBA_NVCC_CHECK "${defs[@]}" -c "$f" -o "$tmp/out.o"; then
      echo "ok   $f ($arch${defs[*]:+ ${defs[*]}})"
    else
      echo "FAIL $f ($arch${defs[*]:+ ${defs[*]}})"; fail=$((fail + 1))
    fi
  done
done
echo "check-cuda-kernels: $((n - fail)) passed, $fail failed"
[ "$fail" -eq 0 ]
