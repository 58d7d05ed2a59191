// Collect (SPEC §3, the key-block-major form): per (query head h, global block g) the ascending list of
// query rows that chose g. count (integer atomics: the totals do not depend on order) -> exclusive scan
// (one CTA, fixed order) -> fill (atomic cursors: O(T·Hq·topk), order arbitrary) -> sort (per list, in
// shared memory), so every list ends ascending and the result is deterministic.
#include "common.cuh"
using namespace moba;

// Query row t belongs to sequence upper_index(cuq, nseq, t): `cuq` holds the query boundaries (SPEC §8; the key
// boundaries `cu` for self-attention), `block_base` the key blocks.

// counts[h * NB + g] (+1 slot at the end, zeroed by the host) for every selected (t, h, i).
extern "C" __global__ void collect_count(const int* indices, int* counts, const int* cuq, const int* block_base, int nseq,
                                         i64 T_, int Hq, int topk, int NB) {
  const i64 n = T_ * Hq * topk;
  for (i64 e = blockIdx.x * (i64)blockDim.x + threadIdx.x; e < n; e += (i64)gridDim.x * blockDim.x) {
    const int j = indices[e];
    if (j < 0) continue;
    const i64 row = e / topk;
    const i64 t = row / Hq;
    const int h = (int)(row - t * Hq);
    atomicAdd(&counts[(i64)h * NB + block_base[upper_index(cuq, nseq, t)] + j], 1);
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

// Rebuilds list (h, g) in ascending row order by walking its candidate query rows (causal: from the first
// one at or after the block's first key; else the whole sequence) and compacting the rows that chose the
// block (ballot + warp prefix sums). O(candidate rows · topk): the fallback of collect_sort for lists too
// long to sort in shared memory. Called by a whole CTA; `warp_cnt` and `filled` are shared.
__device__ void scan_list(const int* indices, int* rows, const int* cuq, const int* cu, int s, int j, int h, int begin, int need, int Hq,
                          int topk, int B, int causal, int* warp_cnt, int* filled) {
  const int lane = threadIdx.x % WARP, warp = threadIdx.x / WARP, nwarps = blockDim.x / WARP;
  const i64 t_end = cuq[s + 1], o = t_end - (cu[s + 1] - cu[s]);  // o: the query row at key position 0 (SPEC §8)
  __syncthreads();
  if (threadIdx.x == 0) *filled = 0;
  __syncthreads();
  for (i64 t0 = causal ? max((i64)cuq[s], o + (i64)j * B) : cuq[s]; t0 < t_end; t0 += blockDim.x) {
    if (*filled >= need) break;  // uniform: read after the barrier that ended the previous pass
    const i64 t = t0 + threadIdx.x;
    bool hit = false;
    if (t < t_end) {
      const int* ix = indices + (t * Hq + h) * topk;
      for (int i = 0; i < topk && ix[i] >= 0 && ix[i] <= j; ++i) hit |= ix[i] == j;
    }
    const unsigned m = __ballot_sync(0xffffffffu, hit);
    if (lane == 0) warp_cnt[warp] = __popc(m);
    __syncthreads();
    int before = *filled;
    for (int w = 0; w < warp; ++w) before += warp_cnt[w];
    if (hit) rows[begin + before + __popc(m & ((1u << lane) - 1u))] = (int)t;
    __syncthreads();
    if (threadIdx.x == 0) for (int w = 0; w < nwarps; ++w) *filled += warp_cnt[w];
    __syncthreads();
  }
  __syncthreads();
}

// Scatter, unordered: every selected (t, h, i) appends t to its list through an integer atomic cursor
// (cursor[] zeroed by the host). O(T·Hq·topk). The order inside a list is arbitrary here; collect_sort
// makes it ascending, so the final lists do not depend on the atomics' order.
extern "C" __global__ void collect_fill(const int* indices, const int* offsets, int* cursor, int* rows, const int* cuq,
                                        const int* block_base, int nseq, i64 T_, int Hq, int topk, int NB) {
  const i64 n = T_ * Hq * topk;
  for (i64 e = blockIdx.x * (i64)blockDim.x + threadIdx.x; e < n; e += (i64)gridDim.x * blockDim.x) {
    const int j = indices[e];
    if (j < 0) continue;
    const i64 row = e / topk;
    const i64 t = row / Hq;
    const int h = (int)(row - t * Hq);
    const i64 list = (i64)h * NB + block_base[upper_index(cuq, nseq, t)] + j;
    rows[offsets[list] + atomicAdd(&cursor[list], 1)] = (int)t;
  }
}

// Sorts each list ascending: one CTA per list (grid-strided), a bitonic sort in shared memory for lists
// of up to SORT_CAP rows (padded to a power of two with INT_MAX), scan_list for longer ones (rare: a
// block chosen by more than SORT_CAP rows of one head).
constexpr int SORT_CAP = 8192;
extern "C" __global__ void __launch_bounds__(256) collect_sort(const int* indices, const int* offsets, int* rows, const int* cuq,
                                                               const int* cu, const int* block_base, int nseq, int Hq, int topk, int NB,
                                                               int B, int causal) {
  __shared__ int sbuf[SORT_CAP];
  __shared__ int warp_cnt[32];
  __shared__ int filled;
  for (i64 list = blockIdx.x; list < (i64)Hq * NB; list += gridDim.x) {
    const int begin = offsets[list], n = offsets[list + 1] - begin;
    if (n <= 1) continue;  // uniform over the CTA
    if (n > SORT_CAP) {
      const int h = (int)(list / NB), g = (int)(list - (i64)h * NB);
      const int s = upper_index(block_base, nseq, g);
      scan_list(indices, rows, cuq, cu, s, g - block_base[s], h, begin, n, Hq, topk, B, causal, warp_cnt, &filled);
      continue;
    }
    int P = 1;
    while (P < n) P <<= 1;
    __syncthreads();  // the previous list's readers are done with sbuf
    for (int i = threadIdx.x; i < P; i += blockDim.x) sbuf[i] = i < n ? rows[begin + i] : 0x7fffffff;
    __syncthreads();
    for (int k = 2; k <= P; k <<= 1) {
      for (int m = k >> 1; m > 0; m >>= 1) {
        for (int i = threadIdx.x; i < P; i += blockDim.x) {
          const int o = i ^ m;
          if (o > i) {
            const int a = sbuf[i], b = sbuf[o];
            if ((a > b) == ((i & k) == 0)) { sbuf[i] = b; sbuf[o] = a; }
          }
        }
        __syncthreads();
      }
    }
    for (int i = threadIdx.x; i < n; i += blockDim.x) rows[begin + i] = sbuf[i];
  }
}

// Routing slot of every list entry: slots[e] = the position i of block g in row rows[e]'s indices (head h)
// for list (h, g). One CTA per list (grid-strided); the attention kernels read it with the rows instead of
// searching the indices (dependent loads) inside their chunk loops.
extern "C" __global__ void __launch_bounds__(256) collect_slot_of(const int* indices, const int* offsets, const int* rows, int* slots,
                                                                const int* block_base, int nseq, int Hq, int topk, int NB) {
  for (i64 list = blockIdx.x; list < (i64)Hq * NB; list += gridDim.x) {
    const int h = (int)(list / NB), g = (int)(list - (i64)h * NB);
    const int jl = g - block_base[upper_index(block_base, nseq, g)];
    const int begin = offsets[list], end = offsets[list + 1];
    for (int e = begin + threadIdx.x; e < end; e += blockDim.x) {
      const int* ix = indices + ((i64)rows[e] * Hq + h) * topk;
      int slot = 0;
      for (int i = 0; i < topk; ++i)
        if (ix[i] == jl) slot = i;
      slots[e] = slot;
    }
  }
}
