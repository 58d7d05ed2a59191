// Shared helpers of the moba-ts CUDA kernels. Compiled by NVRTC at run time (the TypeScript loader
// inlines this file where a kernel includes it) and by nvcc in CI: only CUDA headers, no host headers.
#pragma once

// Kernel paths (src/path.ts). MOBA_SM90 is defined (=1) for the sm90 path: Hopper, compiled for sm_90a, the one
// target on which wgmma.mma_async, setmaxnreg and TMA / cp.async.bulk.tensor are legal. The sm80 path (every other
// device, and Hopper with kernelPath 'sm80' / MOBA_CUDA_PATH=sm80) leaves it undefined and compiles for the
// device's sm_XY. A kernel with a Hopper variant puts it under `#ifdef MOBA_SM90` and keeps the mma.sync version
// in the #else; the host picks entry points by `device.kernelPath`. scripts/check-cuda-kernels.sh compiles every
// file both ways (sm_80, sm_90 without it; sm_90a with it). No kernel differs between the paths yet. (No #error
// on a missing __CUDA_ARCH_FEAT_SM90_ALL here: one of nvcc's preprocessing passes defines __CUDA_ARCH__ without it.)
#ifndef MOBA_NO_HALF  // (MOBA_NO_HALF: f32 only, for compile checks with an NVRTC whose fp16 headers are missing)
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#endif

// NVRTC has no <math.h>: define what nvcc's host headers would.
#ifndef INFINITY
#define INFINITY __int_as_float(0x7f800000)
#endif
#ifndef NAN
#define NAN __int_as_float(0x7fffffff)
#endif

namespace moba {
// NaN or ±inf, on the bits (independent of fast-math flags): a non-finite score poisons its row (docs/api.md)
__device__ __forceinline__ bool not_finite(float x) { return (__float_as_uint(x) & 0x7f800000u) == 0x7f800000u; }

typedef long long i64;

// Storage dtypes: f32, f16 and bf16 are loaded to f32 and stored with round-to-nearest-even.
__device__ __forceinline__ float ld(const float* p, i64 i) { return p[i]; }
__device__ __forceinline__ void st(float* p, i64 i, float x) { p[i] = x; }
#ifndef MOBA_NO_HALF
__device__ __forceinline__ float ld(const __half* p, i64 i) { return __half2float(p[i]); }
__device__ __forceinline__ float ld(const __nv_bfloat16* p, i64 i) { return __bfloat162float(p[i]); }
__device__ __forceinline__ void st(__half* p, i64 i, float x) { p[i] = __float2half_rn(x); }
__device__ __forceinline__ void st(__nv_bfloat16* p, i64 i, float x) { p[i] = __float2bfloat16_rn(x); }
#endif

constexpr float LOG2E = 1.4426950408889634f;
constexpr float LN2 = 0.6931471805599453f;
constexpr int WARP = 32;

// Deterministic warp reductions (fixed butterfly order); every lane gets the result.
__device__ __forceinline__ float warp_sum(float x) {
  for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
  return x;
}
__device__ __forceinline__ float warp_max(float x) {
  for (int o = 16; o > 0; o >>= 1) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, o));
  return x;
}

// The last index i in [0, n) with a[i] <= x (a non-decreasing, a[0] <= x): sequence of a token from
// cu_seqlens, or of a global block from block_base.
__device__ __forceinline__ int upper_index(const int* a, int n, i64 x) {
  int lo = 0, hi = n - 1;
  while (lo < hi) {
    int mid = (lo + hi + 1) >> 1;
    if (a[mid] <= x) lo = mid; else hi = mid - 1;
  }
  return lo;
}

}  // namespace moba

// One extern "C" entry point per storage dtype: NAME_f32, NAME_f16, NAME_bf16.
#ifndef MOBA_NO_HALF
#define MOBA_DTYPES(X) X(f32, float) X(f16, __half) X(bf16, __nv_bfloat16)
#else
#define MOBA_DTYPES(X) X(f32, float)
#endif
