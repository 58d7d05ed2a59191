// Tensor-core building blocks of the fast attention kernels (f16/bf16 inputs, f32 accumulation, sm_80+):
// mma.sync m16n8k16, ldmatrix, and the shared-memory tile staging and gathering they read from.
//
// Fragment layouts (PTX ISA, "Matrix Fragments for mma.m16n8k16"); g = lane / 4, c = lane % 4:
//   A (16x16, row-major)  a0: (g, 2c..2c+1)  a1: (g+8, 2c..)  a2: (g, 2c+8..)  a3: (g+8, 2c+8..)
//   B (16x8, "col")       b0: (k 2c..2c+1, n g)  b1: (k 2c+8.., n g)
//   C (16x8, f32)         c0,c1: (g, 2c..2c+1)  c2,c3: (g+8, 2c..2c+1)
// So the C fragments of two neighbouring n-tiles are exactly an A fragment of a k16 step (after packing
// to 16 bits): P = softmax(S) feeds P·V without leaving registers.
//
// Shared tiles are row-major [rows][D + PAD] 16-bit elements: the 16-byte pad shifts consecutive rows by
// 4 banks, so the 8 row addresses of one ldmatrix phase hit distinct banks.
#pragma once
#include "common.cuh"

namespace moba {

constexpr int PAD = 8;  // elements of row padding in shared tiles

#ifndef MOBA_NO_HALF
// Two f32 → one 32-bit register of two 16-bit values (low half = first, the lower column).
__device__ __forceinline__ unsigned pack2(__half, float a, float b) {
  __half2 h = __floats2half2_rn(a, b);
  return *reinterpret_cast<unsigned*>(&h);
}
__device__ __forceinline__ unsigned pack2(__nv_bfloat16, float a, float b) {
  __nv_bfloat162 h = __floats2bfloat162_rn(a, b);
  return *reinterpret_cast<unsigned*>(&h);
}

// c += a · b, m16n8k16, f32 accumulators.
__device__ __forceinline__ void mma(__half, float* c, const unsigned* a, const unsigned* b) {
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
               : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
__device__ __forceinline__ void mma(__nv_bfloat16, float* c, const unsigned* a, const unsigned* b) {
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
               : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
#endif

__device__ __forceinline__ unsigned smem_addr(const void* p) { return (unsigned)__cvta_generic_to_shared(p); }

// Four 8x8 matrices; lane l gives the address of row l % 8 of matrix l / 8.
__device__ __forceinline__ void ldsm_x4(unsigned* r, const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(smem_addr(p)));
}
__device__ __forceinline__ void ldsm_x4_t(unsigned* r, const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(smem_addr(p)));
}

// A fragment (16 rows from r0, 16 columns from c0) of a row-major shared tile with row stride ld.
template <typename T>
__device__ __forceinline__ void frag_a(unsigned* a, const T* s, int ld, int r0, int c0) {
  const int l = threadIdx.x % WARP;
  ldsm_x4(a, s + (r0 + l % 16) * ld + c0 + (l / 16) * 8);
}

// B fragments of two n-tiles when the tile stores B transposed, [n][k] (S = Q·Kᵀ reads K as [key][dim]):
// b[0..1] for n0..n0+7, b[2..3] for n0+8..n0+15, k from k0 to k0 + 15.
template <typename T>
__device__ __forceinline__ void frag_b_nk(unsigned* b, const T* s, int ld, int n0, int k0) {
  const int l = threadIdx.x % WARP;
  ldsm_x4(b, s + (n0 + l % 8 + (l / 16) * 8) * ld + k0 + ((l / 8) % 2) * 8);
}

// B fragments of two n-tiles when the tile stores B as [k][n] (P·V reads V as [key][dim]): transposed load.
template <typename T>
__device__ __forceinline__ void frag_b_kn(unsigned* b, const T* s, int ld, int k0, int n0) {
  const int l = threadIdx.x % WARP;
  ldsm_x4_t(b, s + (k0 + l % 8 + ((l / 8) % 2) * 8) * ld + n0 + (l / 16) * 8);
}

// Asynchronous 16-byte global -> shared copy (sm_80 cp.async); `valid` false writes 16 zero bytes instead
// (src-size 0: nothing is read). Groups: commit after a batch, wait until at most N groups are pending.
__device__ __forceinline__ void cp_async16(void* dst, const void* src, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(dst)), "l"(src), "r"(valid ? 16 : 0) : "memory");
}
// 4-byte variant (through L1; cp.async.cg takes 16 bytes only).
__device__ __forceinline__ void cp_async4(void* dst, const void* src) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4;\n" ::"r"(smem_addr(dst)), "l"(src) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory"); }

// Copies `n` rows of D 16-bit elements into a shared tile of `rows` rows (rows past n are zero):
// row r comes from src + row_off(r) elements. 16-byte vectors; D is a multiple of 8.
template <int D, typename T, typename RowOff>
__device__ __forceinline__ void stage_rows(T* s, int rows, int n, const T* src, RowOff row_off) {
  constexpr int V = D / 8;  // 16-byte vectors per row
  for (int i = threadIdx.x; i < rows * V; i += blockDim.x) {
    const int r = i / V, c = (i - r * V) * 8;
    uint4 x = make_uint4(0u, 0u, 0u, 0u);
    if (r < n) x = *reinterpret_cast<const uint4*>(src + row_off(r) + c);
    *reinterpret_cast<uint4*>(s + r * (D + PAD) + c) = x;
  }
}

// stage_rows by cp.async (16-byte vectors, rows past n zero-filled); the caller commits the group and
// waits for it (cp_async_wait + a barrier) before reading the tile.
template <int D, typename T, typename RowOff>
__device__ __forceinline__ void stage_rows_async(T* s, int rows, int n, const T* src, RowOff row_off) {
  constexpr int V = D / 8;
  for (int i = threadIdx.x; i < rows * V; i += blockDim.x) {
    const int r = i / V, c = (i - r * V) * 8;
    cp_async16(s + r * (D + PAD) + c, r < n ? src + row_off(r) + c : src, r < n);
  }
}

// Online-softmax scale of a row: the running max to subtract (0 while nothing finite was seen, so
// exp2(-inf - 0) = 0 and NaN scores stay NaN instead of being hidden).
__device__ __forceinline__ float safe_max(float m) { return m == -INFINITY ? 0.f : m; }

// Max / sum over the 4 lanes of a quad (the lanes that share an accumulator row); fixed order.
__device__ __forceinline__ float quad_max(float x) {
  x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 1));
  return fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 2));
}
__device__ __forceinline__ float quad_sum(float x) {
  x += __shfl_xor_sync(0xffffffffu, x, 1);
  return x + __shfl_xor_sync(0xffffffffu, x, 2);
}

}  // namespace moba
