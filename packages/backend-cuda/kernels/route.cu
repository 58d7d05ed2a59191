// Routing (SPEC §2-3). centroids: per (global block, kv head) the f32 mean of the block's actual keys,
// [totalBlocks, Hkv, D]. route: fused scoring + running top-k; the [T, NB] score matrix never exists.
// A CTA (ROUTE_WARPS warps) owns a tile of ROUTE_ROWS consecutive query rows of one sequence and one
// query head; it walks the eligible centroids in tiles of `ct` staged in shared memory; lane j of a
// warp scores centroid j of the tile for one row at a time, and lane 0 inserts the winners into the
// row's top-k (shared memory, sorted by score descending, ties to the higher block). Two barriers per
// centroid tile: the tile is complete before anyone reads it and nobody still reads it when the next
// one is written. Exact and deterministic: every score is one fixed-order f32 dot product.
#include "common.cuh"
using namespace moba;

constexpr int ROUTE_ROWS = 16;  // query rows per CTA
constexpr int ROUTE_WARPS = 4;  // 128 threads; warp w owns rows w, w + 4, ...

extern "C" __global__ void centroids(const void* kraw, int dtype, float* cent, const int* cu, const int* block_base, int nseq,
                                     int B, int C, int total_blocks) {
  // grid: (total_blocks, ceil(C / blockDim.x)); thread = one channel of one block
  int g = blockIdx.x;
  int c = blockIdx.y * blockDim.x + threadIdx.x;
  if (g >= total_blocks || c >= C) return;
  int s = upper_index(block_base, nseq, g);
  i64 p0 = cu[s] + (i64)(g - block_base[s]) * B;
  i64 p1 = min(p0 + B, (i64)cu[s + 1]);
  float sum = 0.f;
  for (i64 p = p0; p < p1; ++p) {
    i64 e = p * C + c;
#ifndef MOBA_NO_HALF
    sum += dtype == 0 ? ld((const float*)kraw, e) : dtype == 1 ? ld((const __half*)kraw, e) : ld((const __nv_bfloat16*)kraw, e);
#else
    sum += ld((const float*)kraw, e);
#endif
  }
  cent[(i64)g * C + c] = sum / (float)(p1 - p0);  // mean over the block's actual tokens
}

// Offers block j with score x to a top-k list sorted descending; blocks arrive ascending, so a tie
// goes to j (the higher index). NaN and -inf never enter.
__device__ __forceinline__ void topk_offer(float* val, int* idx, int& n, int slots, float x, int j) {
  if (!(x > -INFINITY)) return;
  if (n == slots) {
    if (!(x >= val[n - 1])) return;
    --n;
  }
  int p = n++;
  for (; p > 0 && val[p - 1] <= x; --p) { val[p] = val[p - 1]; idx[p] = idx[p - 1]; }
  val[p] = x;
  idx[p] = j;
}

template <typename T>
__device__ void route(const T* q, const float* cent, int* indices, const int* cu, const int* block_base, const int* tile_base,
                      int nseq, int Hq, int Hkv, int D, int B, int topk, int causal, int ct) {
  extern __shared__ float smem[];
  float* sc = smem;                              // [ct][D + 1] centroid tile (padded: lane j reads row j)
  float* sq = sc + ct * (D + 1);                 // [ROUTE_ROWS][D] query rows
  float* tv = sq + ROUTE_ROWS * D;               // [ROUTE_ROWS][topk] top-k scores
  int* ti = (int*)(tv + ROUTE_ROWS * topk);      // [ROUTE_ROWS][topk] top-k blocks
  int* tn = ti + ROUTE_ROWS * topk;              // [ROUTE_ROWS] counts
  const int h = blockIdx.y, kvh = h / (Hq / Hkv), lane = threadIdx.x % WARP, warp = threadIdx.x / WARP;
  const int s = upper_index(tile_base, nseq, blockIdx.x);
  const i64 s0 = cu[s], len = cu[s + 1] - s0;
  const i64 r0 = s0 + (i64)(blockIdx.x - tile_base[s]) * ROUTE_ROWS;
  const int rows = (int)min((i64)ROUTE_ROWS, s0 + len - r0);
  const int nblocks = (int)((len + B - 1) / B), slots = causal ? topk - 1 : topk;
  for (int i = threadIdx.x; i < ROUTE_ROWS * D; i += blockDim.x)
    sq[i] = i / D < rows ? ld(q, ((r0 + i / D) * Hq + h) * D + i % D) : 0.f;
  if (threadIdx.x < ROUTE_ROWS) tn[threadIdx.x] = 0;
  // eligible blocks of a row: causal, those fully before its own block; else every block of the sequence
  const int elig_max = causal ? (int)((r0 + rows - 1 - s0) / B) : nblocks;
  for (int c0 = 0; slots > 0 && c0 < elig_max; c0 += ct) {
    const int nc = min(ct, elig_max - c0);
    __syncthreads();  // the previous tile is no longer read (and sq / tn are ready on the first pass)
    for (int i = threadIdx.x; i < nc * D; i += blockDim.x)
      sc[(i / D) * (D + 1) + i % D] = cent[((i64)(block_base[s] + c0 + i / D) * Hkv + kvh) * D + i % D];
    __syncthreads();  // the tile is complete
    for (int r = warp; r < rows; r += ROUTE_WARPS) {
      const int elig = causal ? (int)((r0 + r - s0) / B) : nblocks;
      const int j = c0 + lane;
      float x = -INFINITY;
      if (lane < nc && j < elig) {
        x = 0.f;
        for (int d = 0; d < D; ++d) x += sq[r * D + d] * sc[lane * (D + 1) + d];
        if (x != x) x = -INFINITY;  // NaN never wins
      }
      // only lanes that can enter the list are offered, in ascending block order, by lane 0
      const float thr = tn[r] == slots ? tv[r * topk + slots - 1] : -INFINITY;
      unsigned m = __ballot_sync(0xffffffffu, x > -INFINITY && x >= thr);
      __syncwarp();
      while (m) {
        const int l = __ffs(m) - 1;
        m &= m - 1;
        const float xl = __shfl_sync(0xffffffffu, x, l);
        if (lane == 0) { int n = tn[r]; topk_offer(tv + r * topk, ti + r * topk, n, slots, xl, c0 + l); tn[r] = n; }
      }
      __syncwarp();
    }
  }
  __syncthreads();
  // write each row ascending, the own block added when causal, then -1 padding
  for (int r = threadIdx.x; r < rows; r += blockDim.x) {
    int* o = indices + ((r0 + r) * Hq + h) * topk;
    int n = slots > 0 ? tn[r] : 0;
    int sel[64];
    for (int i = 0; i < n; ++i) sel[i] = ti[r * topk + i];
    if (causal) sel[n++] = (int)((r0 + r - s0) / B);
    for (int i = 1; i < n; ++i)  // insertion sort, n <= 64
      for (int p = i; p > 0 && sel[p - 1] > sel[p]; --p) { int t = sel[p]; sel[p] = sel[p - 1]; sel[p - 1] = t; }
    for (int i = 0; i < topk; ++i) o[i] = i < n ? sel[i] : -1;
  }
}

#define ROUTE_ENTRY(N, T)                                                                                         \
  extern "C" __global__ void __launch_bounds__(ROUTE_WARPS * WARP) route_##N(                                     \
      const T* q, const float* cent, int* indices, const int* cu, const int* block_base, const int* tile_base,    \
      int nseq, int Hq, int Hkv, int D, int B, int topk, int causal, int ct) {                                     \
    route<T>(q, cent, indices, cu, block_base, tile_base, nseq, Hq, Hkv, D, B, topk, causal, ct);                  \
  }
MOBA_DTYPES(ROUTE_ENTRY)
