// The router of the paged KV cache (cache.cu): per (query row, kv head) the page centroids of its sequence in
// tiles of CR_CT blocks shared by the query heads of that kv head; each head keeps an exact top-k list
// (ties to the higher block index; NaN and -inf never win). The tiles of a row are split over gridDim.z CTAs
// (contiguous ranges of tps tiles); each writes its exact partial list and the last to arrive merges them.
// Included by cache.cu only (mma.cuh: the cp.async helpers).
#pragma once
#include "mma.cuh"
#include "cache-topk.cuh"

namespace moba {
constexpr int CR_CT = 32;    // centroids per routing tile (one per lane)
constexpr int CR_MAXWARPS = 8;  // warps of a CTA (hpc <= 8)

// Tile layout in shared memory: D4 = ceil(D / 4) float4 chunks per centroid; chunk c4 of centroid jj (0 <= jj < CR_CT)
// sits at tile[c4 * CR_CT + (jj ^ (c4 & 7))]. A warp that writes one chunk of 32 centroids and a warp whose lanes
// read one chunk each of their own centroids both touch 32 distinct 16-byte slots of one 512-byte row: no bank
// conflicts either way.
__device__ __forceinline__ int cr_slot(int c4, int jj) { return c4 * CR_CT + (jj ^ (c4 & 7)); }

// Starts loading centroid tile j0 .. j0 + CR_CT of (kv head kvh, the row's sequence) into `tile` (zeros past nb;
// the open block, j == nfull < nb, is a sum: cr_fix_open divides it once the copies landed). `page` is lane jj's
// centroid page (-1: past nb), passed around the warp by shuffles. Chunk e = (jj, c4), e = tid, tid + blockDim, ...:
// a warp's copy covers whole centroid rows (contiguous bytes). VEC (D % 4 == 0): 16-byte cp.async (the caller
// commits and waits); else plain loads.
template <bool VEC>
__device__ __forceinline__ void cr_load_tile(float4* tile, const float* cents, const float* sums, int page, int j0, int nfull, int Hkv, int kvh, int D) {
  const int D4 = (D + 3) / 4;
  for (int e = threadIdx.x; e < CR_CT * D4; e += blockDim.x) {  // the same trip count across a warp (CR_CT·D4 % 32 == 0)
    const int jj = e / D4, c4 = e - jj * D4;
    const int pg = __shfl_sync(CR_FULL, page, jj);
    const float* src = pg < 0 ? cents : (j0 + jj < nfull ? cents : sums) + ((i64)pg * Hkv + kvh) * D;
    float4* dst = tile + cr_slot(c4, jj);
    if constexpr (VEC) {
      cp_async16(dst, src + c4 * 4, pg >= 0);
    } else {
      float x[4];
      for (int u = 0; u < 4; ++u) x[u] = pg >= 0 && c4 * 4 + u < D ? src[c4 * 4 + u] : 0.f;
      *dst = make_float4(x[0], x[1], x[2], x[3]);
    }
  }
}

// The open block's sum in the tile starting at j0 → its centroid (sum / count), when the tile holds it.
__device__ __forceinline__ void cr_fix_open(float4* tile, int j0, int nfull, int nb, int L, int B, int D) {
  const int jj = nfull - j0;
  if (nfull >= nb || jj < 0 || jj >= CR_CT) return;
  const float cnt = (float)(L - nfull * B);
  for (int c4 = threadIdx.x; c4 < (D + 3) / 4; c4 += blockDim.x) {
    float4& x = tile[cr_slot(c4, jj)];
    x.x = x.x / cnt; x.y = x.y / cnt; x.z = x.z / cnt; x.w = x.w / cnt;
  }
}

// rows[r] = (t, L, pbase): query row r sits at key position t of a sequence of L keys whose page table starts
// at ptab[pbase]. sel [Tq, Hq, topk]: the selected blocks, ascending, -1 padded.
//
// Grid (Tq, Hkv·ng, nsplit), ng = ceil(G / hpc), blockDim = 32·max(hpc, 4): the CTA routes query heads
// kvh·G + (blockIdx.y % ng)·hpc + [0, hpc) over tiles [z·tps, (z+1)·tps) of its row; all warps load the tiles
// (cp.async, `nbuf` = 2: the next tile loads while this one is scored; 1: one at a time). With fewer heads than
// warps each head's score is split over wph = warps / hpc warps by dimension ranges, summed in range order; its
// first warp keeps the list. A row whose list length K covers its nb candidates is dense: no list, sel marks each
// block (j or -1) and the merger compacts it (topk > CR_MAXK: always dense, no list memory). Otherwise, with
// nsplit > 1, plist [Tq, Hq, nsplit][2·topk] holds each split's list (scores, then blocks; -inf / -1 padded); cnt
// [Tq·Hkv·ng] are arrival counters (zero between launches: atomicInc wraps). Dynamic shared memory: tiles
// [nbuf][D4·CR_CT] float4, q [hpc][D4] float4, and (topk <= CR_MAXK) list scores [hpc][topk], blocks [hpc][topk].
template <typename T, bool VEC>
__device__ void cache_route_k(const T* q, const float* cents, const float* sums, const int* rows, const int* ptab, int* sel, float* plist,
                              unsigned* cnt, int Hq, int Hkv, int D, int B, int topk, int causal, int hpc, int tps, int nbuf) {
  extern __shared__ float4 cr_smem[];
  __shared__ int cr_last;
  __shared__ float cr_red[CR_MAXWARPS][WARP];
  const int lk = topk <= CR_MAXK ? topk : 0;  // list entries per head in shared memory
  const int D4 = (D + 3) / 4, TS = D4 * CR_CT;
  float4* tiles = cr_smem;
  float4* qs = tiles + nbuf * TS;
  float* ls = reinterpret_cast<float*>(qs + hpc * D4);
  int* li = reinterpret_cast<int*>(ls + hpc * lk);
  const int lane = threadIdx.x % WARP, warp = threadIdx.x / WARP, nw = blockDim.x / WARP;
  const int wph = hpc < nw ? nw / hpc : 1;  // warps per head
  const int hs = warp / wph, part = warp - hs * wph;
  const int G = Hq / Hkv, ng = (G + hpc - 1) / hpc;
  const int row = blockIdx.x, kvh = blockIdx.y / ng, split = blockIdx.z, nsplit = gridDim.z;
  const int g = (blockIdx.y % ng) * hpc + hs;
  const bool active = hs < hpc && g < G;  // this warp scores for head h
  const bool lead = active && part == 0;  // ... and keeps its list
  const int h = kvh * G + g;
  const int t = rows[row * 3], L = rows[row * 3 + 1], pbase = rows[row * 3 + 2];
  const int cb = t / B, nfull = L / B;
  const int nb = causal ? cb : (L + B - 1) / B;  // competing blocks
  const int K = causal ? topk - 1 : topk;       // list length (causal: the own block is added at the end)
  const bool dense = K >= nb || lk == 0;
  const int nt = (nb + CR_CT - 1) / CR_CT;
  const int tt0 = min(split * tps, nt), tt1 = min(tt0 + tps, nt);
  const int c0 = part * D4 / wph, c1 = (part + 1) * D4 / wph;  // this warp's dimension chunks
  float4* wq = qs + min(hs, hpc - 1) * D4;
  float* wl = ls + hs * lk;
  int* wi = li + hs * lk;
  int* out = sel + ((i64)row * Hq + h) * topk;
  if (lead) for (int c = lane; c < D4 * 4; c += WARP) reinterpret_cast<float*>(wq)[c] = c < D ? ld(q, ((i64)row * Hq + h) * D + c) : 0.f;
  int n = 0;
  CrThr thr{-INFINITY, -1};  // the list's entry to beat (cache-topk.cuh)
  const bool work = K > 0 && tt0 < tt1;
  int tld = tt0;  // the next tile to load, and this lane's centroid page in it (-1: past nb)
  auto page_of = [&](int tt) { const int j = tt * CR_CT + lane; return tt < tt1 && j < nb ? ptab[pbase + j] : -1; };
  int pld = work ? page_of(tld) : -1;
  auto load_next = [&](float4* dst) {
    cr_load_tile<VEC>(dst, cents, sums, pld, tld * CR_CT, nfull, Hkv, kvh, D);
    if constexpr (VEC) cp_async_commit();
    pld = page_of(++tld);
  };
  if (work) load_next(tiles);
  __syncthreads();  // (wq)
  for (int tt = tt0; work && tt < tt1; ++tt) {
    const int j0 = tt * CR_CT, buf = nbuf == 2 ? (tt - tt0) & 1 : 0;
    float4* tile = tiles + buf * TS;
    if (tld == tt) load_next(tile);  // one buffer: this tile now
    if (nbuf == 2 && tld < tt1) {
      load_next(tiles + (buf ^ 1) * TS);
      if constexpr (VEC) cp_async_wait<1>();
    } else if constexpr (VEC) {
      cp_async_wait<0>();
    }
    __syncthreads();
    if (!causal && nfull < nb && nfull >= j0 && nfull < j0 + CR_CT) {
      cr_fix_open(tile, j0, nfull, nb, L, B, D);
      __syncthreads();
    }
    float s = 0.f;
    if (active) {
      float a0 = 0.f, a1 = 0.f, a2 = 0.f, a3 = 0.f;
      for (int c4 = c0; c4 < c1; ++c4) {
        const float4 x = tile[cr_slot(c4, lane)], y = wq[c4];
        a0 = fmaf(y.x, x.x, a0); a1 = fmaf(y.y, x.y, a1); a2 = fmaf(y.z, x.z, a2); a3 = fmaf(y.w, x.w, a3);
      }
      s = (a0 + a1) + (a2 + a3);
      if (wph > 1) cr_red[warp][lane] = s;
    }
    if (wph > 1) __syncthreads();
    if (lead) {
      if (wph > 1) for (int p = 1; p < wph; ++p) s += cr_red[warp + p][lane];
      const int j = j0 + lane;
      const bool valid = j < nb && s > -INFINITY;  // NaN and -inf never win
      if (dense) { if (j < nb) out[j] = valid ? j : -1; }
      else cr_insert(s, j, valid, wl, wi, n, K, thr);
    }
    __syncthreads();  // the tile and cr_red are rewritten next
  }
  if (nsplit > 1) {
    if (lead && !dense) {
      float* P = plist + (((i64)row * Hq + h) * nsplit + split) * 2 * topk;
      for (int i = lane; i < K; i += WARP) { P[i] = i < n ? wl[i] : -INFINITY; reinterpret_cast<int*>(P)[topk + i] = i < n ? wi[i] : -1; }
    }
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) cr_last = atomicInc(cnt + (i64)row * gridDim.y + blockIdx.y, nsplit - 1) == (unsigned)(nsplit - 1);
    __syncthreads();
    if (!cr_last) return;
    __threadfence();
    if (lead && !dense && K > 0) {  // the other splits' lists in range order, flattened (split, entry), 32 at a time
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
        cr_insert(cs, cj, cs > -INFINITY, wl, wi, n, K, thr);
      }
    }
  }
  if (!lead) return;
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

template <typename T>
__device__ void cache_route(const T* q, const float* cents, const float* sums, const int* rows, const int* ptab, int* sel, float* plist,
                            unsigned* cnt, int Hq, int Hkv, int D, int B, int topk, int causal, int hpc, int tps, int nbuf) {
  if ((D & 3) == 0) cache_route_k<T, true>(q, cents, sums, rows, ptab, sel, plist, cnt, Hq, Hkv, D, B, topk, causal, hpc, tps, nbuf);
  else cache_route_k<T, false>(q, cents, sums, rows, ptab, sel, plist, cnt, Hq, Hkv, D, B, topk, causal, hpc, tps, nbuf);
}
}  // namespace moba
