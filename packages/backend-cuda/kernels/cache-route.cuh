// The router of the paged KV cache (cache.cu): per (query row, kv head) the page centroids of its sequence in
// tiles of CR_CT blocks shared by the query heads of that kv head; each head keeps an exact top-k list
// (ties to the higher block index; NaN and -inf never win). The tiles of a row are split over gridDim.z CTAs
// (contiguous ranges of tps tiles); each writes its exact partial list and the last to arrive merges them.
// Included by cache.cu only.
#pragma once
#include "common.cuh"

namespace moba {
constexpr int CR_CT = 32;    // centroids per routing tile (one per lane)
constexpr int CR_MAXK = 64;  // largest list (two list entries per lane; cache-tables.ts checks it)
constexpr unsigned CR_FULL = 0xffffffffu;

__device__ __forceinline__ bool better(float s1, int j1, float s2, int j2) { return s1 > s2 || (s1 == s2 && j1 > j2); }

// Inserts the lanes' candidates (s, j) where `valid` into a warp's list (wl, wi) of n entries, best first, at most
// K. better() is a strict order on distinct blocks: the final list does not depend on the insertion order.
__device__ __forceinline__ void cr_insert(float s, int j, bool valid, float* wl, int* wi, int& n, int K) {
  const int lane = threadIdx.x % WARP;
  unsigned cand = __ballot_sync(CR_FULL, valid && (n < K || better(s, j, wl[K - 1], wi[K - 1])));
  while (cand) {
    const int src = __ffs(cand) - 1;
    cand &= cand - 1;
    const float cs = __shfl_sync(CR_FULL, s, src);
    const int cj = __shfl_sync(CR_FULL, j, src);
    if (n == K && !better(cs, cj, wl[K - 1], wi[K - 1])) continue;  // beaten by an earlier insertion
    int pos = 0;  // entries better than the candidate (the list is sorted best first)
    for (int b0 = 0; b0 < n; b0 += WARP) {
      const int i = b0 + lane;
      pos += __popc(__ballot_sync(CR_FULL, i < n && better(wl[i], wi[i], cs, cj)));
    }
    const int nn = min(n + 1, K);
    float vs[CR_MAXK / WARP];
    int vi[CR_MAXK / WARP];
    for (int r = 0; r < CR_MAXK / WARP; ++r) {
      const int i = lane + r * WARP;
      vs[r] = cs;
      vi[r] = cj;
      if (i < nn && i != pos) { vs[r] = wl[i < pos ? i : i - 1]; vi[r] = wi[i < pos ? i : i - 1]; }
    }
    __syncwarp();
    for (int r = 0; r < CR_MAXK / WARP; ++r) {
      const int i = lane + r * WARP;
      if (i < nn) { wl[i] = vs[r]; wi[i] = vi[r]; }
    }
    __syncwarp();
    n = nn;
  }
}

// Centroid tile j0 .. j0 + CR_CT of (kv head kvh, the row's sequence) into tile [CR_CT][D+1] (zeros past nb).
__device__ __forceinline__ void cr_load_tile(float* tile, const float* cents, const float* sums, const int* ptab, int pbase, int j0,
                                             int nb, int nfull, int L, int B, int Hkv, int kvh, int D) {
  if ((D & 3) == 0) {  // 16-byte loads (rows of D floats, 16-byte aligned)
    const int D4 = D >> 2;
    for (int e = threadIdx.x; e < CR_CT * D4; e += blockDim.x) {
      const int jj = e / D4, d = (e - jj * D4) * 4, j = j0 + jj;
      float4 x = make_float4(0.f, 0.f, 0.f, 0.f);
      if (j < nb) {
        const i64 o = ((i64)ptab[pbase + j] * Hkv + kvh) * D + d;
        if (j < nfull) x = *reinterpret_cast<const float4*>(cents + o);
        else {  // the open block (non-causal): sum / count
          const float cnt = (float)(L - j * B);
          x = *reinterpret_cast<const float4*>(sums + o);
          x.x = x.x / cnt; x.y = x.y / cnt; x.z = x.z / cnt; x.w = x.w / cnt;
        }
      }
      float* tp = tile + jj * (D + 1) + d;
      tp[0] = x.x; tp[1] = x.y; tp[2] = x.z; tp[3] = x.w;
    }
  } else {
    for (int e = threadIdx.x; e < CR_CT * D; e += blockDim.x) {
      const int jj = e / D, d = e - jj * D, j = j0 + jj;
      float x = 0.f;
      if (j < nb) {
        const i64 o = ((i64)ptab[pbase + j] * Hkv + kvh) * D + d;
        x = j < nfull ? cents[o] : sums[o] / (float)(L - j * B);  // the open block (non-causal): sum / count
      }
      tile[jj * (D + 1) + d] = x;
    }
  }
}

// rows[r] = (t, L, pbase): query row r sits at key position t of a sequence of L keys whose page table starts
// at ptab[pbase]. sel [Tq, Hq, topk]: the selected blocks, ascending, -1 padded.
//
// Grid (Tq, Hkv·ng, nsplit), ng = ceil(G / hpc), blockDim = 32·max(hpc, 4): warp w < hpc routes query head
// kvh·G + (blockIdx.y % ng)·hpc + w over tiles [z·tps, (z+1)·tps) of its row; all warps load the tiles they share.
// A row whose list length K covers its nb candidates is dense: no list, sel marks each block (j or -1) and the
// merger compacts it (topk > CR_MAXK: always dense, no list memory). Otherwise, with nsplit > 1, plist
// [Tq, Hq, nsplit][2·topk] holds each split's list (scores, then blocks; -inf / -1 padded); cnt [Tq·Hkv·ng] are
// arrival counters (zero between launches: atomicInc wraps). Dynamic shared memory: tile [CR_CT][D+1],
// q [hpc][D], and (topk <= CR_MAXK) list scores [hpc][topk], list blocks [hpc][topk].
template <typename T>
__device__ void cache_route(const T* q, const float* cents, const float* sums, const int* rows, const int* ptab, int* sel, float* plist,
                            unsigned* cnt, int Hq, int Hkv, int D, int B, int topk, int causal, int hpc, int tps) {
  extern __shared__ float cr_smem[];
  __shared__ int cr_last;
  const int lk = topk <= CR_MAXK ? topk : 0;  // list entries per head in shared memory
  float* tile = cr_smem;
  float* qs = tile + CR_CT * (D + 1);
  float* ls = qs + hpc * D;
  int* li = reinterpret_cast<int*>(ls + hpc * lk);
  const int lane = threadIdx.x % WARP, warp = threadIdx.x / WARP;
  const int G = Hq / Hkv, ng = (G + hpc - 1) / hpc;
  const int row = blockIdx.x, kvh = blockIdx.y / ng, split = blockIdx.z, nsplit = gridDim.z;
  const int g = (blockIdx.y % ng) * hpc + warp;
  const bool active = warp < hpc && g < G;
  const int h = kvh * G + g;
  const int t = rows[row * 3], L = rows[row * 3 + 1], pbase = rows[row * 3 + 2];
  const int cb = t / B, nfull = L / B;
  const int nb = causal ? cb : (L + B - 1) / B;  // competing blocks
  const int K = causal ? topk - 1 : topk;       // list length (causal: the own block is added at the end)
  const bool dense = K >= nb || lk == 0;
  const int nt = (nb + CR_CT - 1) / CR_CT;
  const int tt0 = min(split * tps, nt), tt1 = min(tt0 + tps, nt);
  float* wq = qs + warp * D;
  float* wl = ls + warp * lk;
  int* wi = li + warp * lk;
  int* out = sel + ((i64)row * Hq + h) * topk;
  if (active) for (int d = lane; d < D; d += WARP) wq[d] = ld(q, ((i64)row * Hq + h) * D + d);
  int n = 0;
  for (int tt = tt0; K > 0 && tt < tt1; ++tt) {
    const int j0 = tt * CR_CT;
    __syncthreads();
    cr_load_tile(tile, cents, sums, ptab, pbase, j0, nb, nfull, L, B, Hkv, kvh, D);
    __syncthreads();
    if (!active) continue;
    const int j = j0 + lane;
    float s = -INFINITY;
    if (j < nb) {
      s = 0.f;
      const float* cp = tile + lane * (D + 1);
      for (int d = 0; d < D; ++d) s += wq[d] * cp[d];
    }
    const bool valid = s > -INFINITY;  // NaN and -inf never win
    if (dense) { if (j < nb) out[j] = valid ? j : -1; }
    else cr_insert(s, j, valid, wl, wi, n, K);
  }
  if (nsplit > 1) {
    if (active && !dense) {
      float* P = plist + (((i64)row * Hq + h) * nsplit + split) * 2 * topk;
      for (int i = lane; i < K; i += WARP) { P[i] = i < n ? wl[i] : -INFINITY; reinterpret_cast<int*>(P)[topk + i] = i < n ? wi[i] : -1; }
    }
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) cr_last = atomicInc(cnt + (i64)row * gridDim.y + blockIdx.y, nsplit - 1) == (unsigned)(nsplit - 1);
    __syncthreads();
    if (!cr_last) return;
    __threadfence();
    if (active && !dense && K > 0) {  // the other splits' lists in range order, flattened (split, entry), 32 at a time
      const i64 base = ((i64)row * Hq + h) * nsplit;
      const int tot = nsplit * K;
      float ns = -INFINITY;
      int nj = -1;
      auto fetch = [&](int e) {  // entry e of the flattened lists into (ns, nj); own split and past the end: none
        ns = -INFINITY;
        nj = -1;
        const int s2 = e / K, i = e - s2 * K;
        if (e < tot && s2 != split) {
          const float* P = plist + (base + s2) * 2 * topk;
          ns = __ldcg(P + i);
          nj = __ldcg(reinterpret_cast<const int*>(P) + topk + i);
        }
      };
      fetch(lane);
      for (int e0 = 0; e0 < tot; e0 += WARP) {
        const float cs = ns;
        const int cj = nj;
        fetch(e0 + WARP + lane);  // the next chunk's loads in flight during this one's insertions
        cr_insert(cs, cj, cs > -INFINITY, wl, wi, n, K);
      }
    }
  }
  if (!active) return;
  __syncwarp();
  if (dense) {  // compact the marks in place, ascending (writes go to positions at most the ones read)
    for (int j0 = 0; j0 < nb; j0 += WARP) {
      const int j = j0 + lane;
      const int v = j < nb ? __ldcg(out + j) : -1;
      const unsigned m = __ballot_sync(CR_FULL, v >= 0);
      __syncwarp();
      const int pos = n + __popc(m & ((1u << lane) - 1u));
      if (v >= 0 && pos < K) out[pos] = j;  // K >= nb: never cut (the guard keeps a malformed call inside its row)
      n = min(n + __popc(m), K);
      __syncwarp();
    }
  } else {
    for (int i = lane; i < n; i += WARP) {
      int rank = 0;
      for (int i2 = 0; i2 < n; ++i2) rank += wi[i2] < wi[i];
      out[rank] = wi[i];
    }
  }
  const int used = n + (causal ? 1 : 0);
  if (causal && lane == 0) out[n] = cb;
  for (int i = used + lane; i < topk; i += WARP) out[i] = -1;
}
}  // namespace moba
