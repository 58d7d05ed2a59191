// Collect (SPEC §3, the key-block-major form): per (query head h, global block g) the ascending list of
// query rows that chose g (offsets [Hq·NB + 1], rows, and slotOf: the routing slot of each entry).
//
// Two-launch path (MOBA_CUDA_COLLECT=chunked, opt-in until checked on the H200; collect.ts plans the chunks):
//  The query rows are cut into chunks of R consecutive rows; chunk c reaches the global blocks [gb, ge) of the
//  sequences its rows belong to (ctab, from the host). part[h][cbase(c) + g - gb] holds one int per (head,
//  chunk, reachable block).
//  1. collect_count_chunks, CTA (c, h): the histogram of its rows' picks per block (shared-memory integer
//     atomics, or atomics on its own part region when the range does not fit), stored in part. The last CTA
//     of head h to finish (threadfence + done[h] counter) turns part[h] into exclusive prefixes over the chunks,
//     per block and in chunk order (a fixed order: no race), and writes the list totals to offsets; the last
//     of those (done[Hq]) scans offsets in place (exclusive). Integer counts: the result does not depend on
//     which CTA finished when.
//  2. collect_place, one warp per (c, h): cursors = offsets[list] + part prefix; the warp walks its rows in
//     ascending order, 32 (row, slot) picks per step in lane order; lanes with the same block rank themselves
//     with __match_any_sync (a row's picks are distinct, so a lower lane is an earlier row). Rows come out
//     ascending in every list with no sort, and rows[] / slotOf[] are written in the same pass.
//  Both are deterministic and equal to the legacy path bit for bit (gpu-check-collect.ts checks it).
// Legacy path (the default): count (atomics) -> exclusive scan (one CTA) -> fill (atomic cursors, order arbitrary) -> sort
// (per list, in shared memory) -> slot of every entry: five launches and a host read of the total.
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

// In place exclusive prefix sum of a[0..n) (a[n - 1] is the extra slot, 0 on entry) by one whole CTA (blockDim a
// multiple of 32, at most 1024). Reads through L2 (__ldcg): other CTAs of the same launch may have written a.
__device__ void block_exclusive_scan(int* a, int n) {
  __shared__ int warp_tot[32];
  __shared__ int carry;
  const int lane = threadIdx.x % WARP, warp = threadIdx.x / WARP;
  if (threadIdx.x == 0) carry = 0;
  __syncthreads();
  for (int base = 0; base < n; base += blockDim.x) {
    const int i = base + threadIdx.x;
    const int x = i < n ? __ldcg(a + i) : 0;
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

// Legacy: the scan of the counts, one CTA of 1024 threads.
extern "C" __global__ void __launch_bounds__(1024) collect_scan(int* a, int n) { block_exclusive_scan(a, n); }

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

// ------------------------------------------------------------------ two-launch collect (see the header)
// ctab[4c .. 4c + 3] = {cbase, gb, ge, s}: the chunk's offset in a head's part row (sum of the earlier chunks'
// ranges), its block range [gb, ge) and its sequence (-1 when its rows span several). S: one head's part row.
constexpr int COLLECT_THREADS = 512;  // geometry.ts K.collectThreads
constexpr int PLACE_UNROLL = 4;       // steps of 32 picks loaded ahead (memory-level parallelism of one warp)

__device__ __forceinline__ int chunk_row_seq(const int* cuq, int nseq, int sfix, i64 t) { return sfix >= 0 ? sfix : upper_index(cuq, nseq, t); }
// Launch 1, grid (chunks, Hq): histograms, the per-head prefixes over chunks, the totals and offsets. `done`:
// Hq + 1 counters, zeroed by the host before the launch. `smem_ints`: the dynamic shared ints (0: none).
extern "C" __global__ void __launch_bounds__(COLLECT_THREADS) collect_count_chunks(const int* indices, const int* ctab, int* part, int* offsets, int* done,
                                                                                   const int* cuq, const int* block_base, int nseq, i64 T_, int Hq, int topk,
                                                                                   int NB, int R, i64 S, int smem_ints) {
  extern __shared__ int sh[];
  __shared__ int last;
  const int c = blockIdx.x, h = blockIdx.y;
  const int cbase = ctab[4 * c], gb = ctab[4 * c + 1], range = ctab[4 * c + 2] - gb, sfix = ctab[4 * c + 3];
  int* region = part + (i64)h * S + cbase;
  int* hist = range <= smem_ints ? sh : region;  // uniform over the CTA
  for (int x = threadIdx.x; x < range; x += blockDim.x) hist[x] = 0;
  __syncthreads();
  const i64 t0 = (i64)c * R;
  const int n = (int)(min(T_ - t0, (i64)R) * topk);
  for (int e = threadIdx.x; e < n; e += blockDim.x) {
    const i64 t = t0 + e / topk;
    const int j = indices[(t * Hq + h) * topk + e % topk];
    if (j >= 0) atomicAdd(&hist[block_base[chunk_row_seq(cuq, nseq, sfix, t)] + j - gb], 1);
  }
  __syncthreads();
  if (hist == sh) for (int x = threadIdx.x; x < range; x += blockDim.x) region[x] = sh[x];
  __threadfence();  // this CTA's part region before its done[h] increment
  __syncthreads();
  if (threadIdx.x == 0) last = atomicAdd(&done[h], 1) == (int)gridDim.x - 1;
  __syncthreads();
  if (!last) return;
  __threadfence();
  // the last CTA of head h: per block g, exclusive prefixes over the chunks that reach g (in chunk order: the
  // chunks of g's sequence, cuq[s] / R .. (cuq[s + 1] - 1) / R), the total into offsets[h·NB + g]
  int* prow = part + (i64)h * S;
  for (int g = threadIdx.x; g < NB; g += blockDim.x) {
    const int s = upper_index(block_base, nseq, g);
    const int q0 = cuq[s], q1 = cuq[s + 1];
    int run = 0;
    if (q1 > q0) {
      const int cl = (q1 - 1) / R;
      for (int cc = q0 / R; cc <= cl; cc += 8) {
        int v[8], *p[8];
#pragma unroll
        for (int u = 0; u < 8; ++u) {  // loads first: they do not depend on each other
          p[u] = cc + u <= cl ? prow + ctab[4 * (cc + u)] + (g - ctab[4 * (cc + u) + 1]) : nullptr;
          v[u] = p[u] ? __ldcg(p[u]) : 0;
        }
#pragma unroll
        for (int u = 0; u < 8; ++u) {
          if (p[u]) __stcg(p[u], run);
          run += v[u];
        }
      }
    }
    offsets[(i64)h * NB + g] = run;
  }
  __threadfence();  // the totals before the done[Hq] increment
  __syncthreads();
  if (threadIdx.x == 0) last = atomicAdd(&done[Hq], 1) == Hq - 1;
  __syncthreads();
  if (!last) return;
  __threadfence();
  block_exclusive_scan(offsets, Hq * NB + 1);  // offsets[Hq·NB] was zeroed by the host
}

// Launch 2, grid (chunks, Hq), one warp each: rows and slots of the chunk's picks, rows ascending per list.
// The cursors live in shared memory (range <= smem_ints) or in place in the CTA's own part region (read by no
// other CTA of this launch).
extern "C" __global__ void __launch_bounds__(32) collect_place(const int* indices, const int* ctab, int* part, const int* offsets, int* rows, int* slots,
                                                               const int* cuq, const int* block_base, int nseq, i64 T_, int Hq, int topk, int NB, int R,
                                                               i64 S, int smem_ints) {
  extern __shared__ int sh[];
  const int c = blockIdx.x, h = blockIdx.y, lane = threadIdx.x;
  const int cbase = ctab[4 * c], gb = ctab[4 * c + 1], range = ctab[4 * c + 2] - gb, sfix = ctab[4 * c + 3];
  int* region = part + (i64)h * S + cbase;
  int* cur = range <= smem_ints ? sh : region;
  const int* off = offsets + (i64)h * NB + gb;
  for (int x = lane; x < range; x += WARP) cur[x] = __ldcg(region + x) + __ldcg(off + x);
  __syncwarp();
  const unsigned below = (1u << lane) - 1u;
  const i64 t0 = (i64)c * R;
  const int n = (int)(min(T_ - t0, (i64)R) * topk);
  for (int e0 = 0; e0 < n; e0 += WARP * PLACE_UNROLL) {  // uniform over the warp
    int key[PLACE_UNROLL];                                 // the pick's block - gb, or -1
#pragma unroll
    for (int u = 0; u < PLACE_UNROLL; ++u) {
      const int e = e0 + u * WARP + lane;
      key[u] = -1;
      if (e < n) {
        const i64 t = t0 + e / topk;
        const int j = indices[(t * Hq + h) * topk + e % topk];
        if (j >= 0) key[u] = block_base[chunk_row_seq(cuq, nseq, sfix, t)] + j - gb;
      }
    }
#pragma unroll
    for (int u = 0; u < PLACE_UNROLL; ++u) {
      const unsigned peers = __match_any_sync(0xffffffffu, key[u]);  // lanes of the same block (or all the -1 lanes)
      const int k = key[u];
      const int pos = k >= 0 ? cur[k] + __popc(peers & below) : 0;
      __syncwarp();  // every peer has read cur[k] before its lowest lane advances it
      if (k >= 0) {
        const int e = e0 + u * WARP + lane;
        rows[pos] = (int)(t0 + e / topk);
        slots[pos] = e % topk;
        if ((peers & below) == 0) cur[k] += __popc(peers);
      }
      __syncwarp();
    }
  }
}
