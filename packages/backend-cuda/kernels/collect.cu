// Collect (SPEC §3, the key-block-major form): per (query head h, global block g) the ascending list of
// query rows that chose g. count (integer atomics: the totals do not depend on order) -> exclusive scan
// (one CTA, fixed order) -> scatter: one CTA per list walks the candidate rows of its sequence in
// ascending order and compacts the rows that chose the block (ballot + warp prefix sums), so every list
// comes out sorted without a separate sort and the result is deterministic. Stops once the list is full.
#include "common.cuh"
using namespace moba;

// counts[h * NB + g] (+1 slot at the end, zeroed by the host) for every selected (t, h, i).
extern "C" __global__ void collect_count(const int* indices, int* counts, const int* cu, const int* block_base, int nseq,
                                         i64 T_, int Hq, int topk, int NB) {
  const i64 n = T_ * Hq * topk;
  for (i64 e = blockIdx.x * (i64)blockDim.x + threadIdx.x; e < n; e += (i64)gridDim.x * blockDim.x) {
    const int j = indices[e];
    if (j < 0) continue;
    const i64 row = e / topk;
    const i64 t = row / Hq;
    const int h = (int)(row - t * Hq);
    atomicAdd(&counts[(i64)h * NB + block_base[upper_index(cu, nseq, t)] + j], 1);
  }
}

// In place exclusive prefix sum of a[0..n) (a[n - 1] is the extra slot, 0 on entry): one CTA of 1024 threads.
extern "C" __global__ void __launch_bounds__(1024) collect_scan(int* a, int n) {
  __shared__ int warp_tot[32];
  __shared__ int carry;
  const int lane = threadIdx.x % WARP, warp = threadIdx.x / WARP;
  if (threadIdx.x == 0) carry = 0;
  __syncthreads();
  for (int base = 0; base < n; base += blockDim.x) {
    const int i = base + threadIdx.x;
    const int x = i < n ? a[i] : 0;
    int incl = x;
    for (int o = 1; o < WARP; o <<= 1) {
      const int y = __shfl_up_sync(0xffffffffu, incl, o);
      if (lane >= o) incl += y;
    }
    if (lane == WARP - 1) warp_tot[warp] = incl;
    __syncthreads();
    if (warp == 0) {
      int w = lane < (int)(blockDim.x / WARP) ? warp_tot[lane] : 0;
      for (int o = 1; o < WARP; o <<= 1) {
        const int y = __shfl_up_sync(0xffffffffu, w, o);
        if (lane >= o) w += y;
      }
      warp_tot[lane] = w;  // inclusive over warps
    }
    __syncthreads();
    const int before = carry + (warp > 0 ? warp_tot[warp - 1] : 0);
    if (i < n) a[i] = before + incl - x;
    __syncthreads();
    if (threadIdx.x == 0) carry += warp_tot[blockDim.x / WARP - 1];
    __syncthreads();
  }
}

// One CTA per list (h, g), grid-strided. Candidate rows: causal, from the block's first token (earlier
// rows cannot choose it); else the whole sequence. A row chose g when its sorted index row holds j.
extern "C" __global__ void collect_scatter(const int* indices, const int* offsets, int* rows, const int* cu, const int* block_base,
                                           int nseq, int Hq, int topk, int NB, int B, int causal) {
  __shared__ int warp_cnt[32];
  __shared__ int filled;
  const int lane = threadIdx.x % WARP, warp = threadIdx.x / WARP, nwarps = blockDim.x / WARP;
  for (i64 list = blockIdx.x; list < (i64)Hq * NB; list += gridDim.x) {
    const int h = (int)(list / NB), g = (int)(list - (i64)h * NB);
    const int s = upper_index(block_base, nseq, g), j = g - block_base[s];
    const int begin = offsets[list], need = offsets[list + 1] - begin;
    const i64 t_end = cu[s + 1];
    if (threadIdx.x == 0) filled = 0;
    __syncthreads();
    for (i64 t0 = cu[s] + (causal ? (i64)j * B : 0); t0 < t_end; t0 += blockDim.x) {
      if (filled >= need) break;  // uniform: read after the barrier that ended the previous pass
      const i64 t = t0 + threadIdx.x;
      bool hit = false;
      if (t < t_end) {
        const int* ix = indices + (t * Hq + h) * topk;
        for (int i = 0; i < topk && ix[i] >= 0 && ix[i] <= j; ++i) hit |= ix[i] == j;
      }
      const unsigned m = __ballot_sync(0xffffffffu, hit);
      if (lane == 0) warp_cnt[warp] = __popc(m);
      __syncthreads();
      int before = filled;
      for (int w = 0; w < warp; ++w) before += warp_cnt[w];
      if (hit) rows[begin + before + __popc(m & ((1u << lane) - 1u))] = (int)t;
      __syncthreads();
      if (threadIdx.x == 0) for (int w = 0; w < nwarps; ++w) filled += warp_cnt[w];
      __syncthreads();
    }
    __syncthreads();
  }
}
