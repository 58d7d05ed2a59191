// Exact top-k lists of the cache router (cache-route.cuh): a warp's list in shared memory (best first; ties to the
// higher block index; NaN and -inf never win), filled one candidate at a time (cr_insert) or 32 at once
// (cr_merge32). better() is a strict order on distinct blocks, so both give the same list.
#pragma once
#include "common.cuh"

namespace moba {
constexpr int CR_MAXK = 64;  // largest list (two list entries per lane; cache-tables.ts checks it)
constexpr unsigned CR_FULL = 0xffffffffu;
constexpr int CR_MERGE_AT = 2;  // more entering candidates than this: cr_merge32 instead of one at a time

__device__ __forceinline__ bool better(float s1, int j1, float s2, int j2) { return s1 > s2 || (s1 == s2 && j1 > j2); }

// Merges the lanes' candidates (s, j) where `valid` into a warp's list (wl, wi) of n entries (best first, at most K)
// in one pass: a bitonic sort of the 32 candidates, then each lane finds list entries lane and lane + 32 of the merge
// by a binary search along the merge path. Constant work however many candidates enter (ties, rising scores), where
// cr_insert's loop costs one round per entering candidate. better() is a strict order: the same list as cr_insert.
__device__ __forceinline__ void cr_merge32(float s, int j, bool valid, float* wl, int* wi, int& n, int K) {
  const int lane = threadIdx.x % WARP;
  if (!valid) { s = -INFINITY; j = -1; }  // last in the order (every valid candidate is better)
  const int nv = __popc(__ballot_sync(CR_FULL, valid));
  for (int k = 2; k <= WARP; k <<= 1) {
    for (int m = k >> 1; m > 0; m >>= 1) {
      const float os = __shfl_xor_sync(CR_FULL, s, m);
      const int oj = __shfl_xor_sync(CR_FULL, j, m);
      const bool want_first = ((lane & m) == 0) == ((lane & k) == 0);  // this lane keeps the better of the pair
      if (want_first != better(s, j, os, oj)) { s = os; j = oj; }
    }
  }
  const int total = min(K, n + nv);
  float rs[CR_MAXK / WARP];
  int ri[CR_MAXK / WARP];
  for (int r = 0; r < (K + WARP - 1) / WARP; ++r) {
    const int i = lane + r * WARP;  // output position
    int lo = max(0, i - nv), hi = min(i, n);  // list entries among the first i outputs: in [lo, hi]
    for (int it = 0; it < 6; ++it) {  // hi - lo <= 32
      const bool go = lo < hi;
      const int mid = (lo + hi) >> 1;
      const int b = go ? i - 1 - mid : 0;
      const float bs = __shfl_sync(CR_FULL, s, b & (WARP - 1));
      const int bj = __shfl_sync(CR_FULL, j, b & (WARP - 1));
      if (go) {
        if (better(wl[mid], wi[mid], bs, bj)) lo = mid + 1;
        else hi = mid;
      }
    }
    const int b = i - lo;
    const float bs = __shfl_sync(CR_FULL, s, b & (WARP - 1));
    const int bj = __shfl_sync(CR_FULL, j, b & (WARP - 1));
    const bool fromList = lo < n && (b >= nv || better(wl[lo], wi[lo], bs, bj));
    rs[r] = fromList ? wl[lo] : bs;
    ri[r] = fromList ? wi[lo] : bj;
  }
  __syncwarp();
  for (int r = 0; r < (K + WARP - 1) / WARP; ++r) {
    const int i = lane + r * WARP;
    if (i < total) { wl[i] = rs[r]; wi[i] = ri[r]; }
  }
  __syncwarp();
  n = total;
}

// Inserts the lanes' candidates (s, j) where `valid` into a warp's list (wl, wi) of n entries, best first, at most
// K. better() is a strict order on distinct blocks: the final list does not depend on the insertion order.
// thr: the entry a candidate must beat to enter, kept in registers (the same in every lane): the list's K-th once it
// holds K entries, else (-inf, -1), which every valid candidate (s > -inf) beats. A tile none of whose candidates
// beats it costs one ballot and no shared-memory read; a tie with a higher block still enters (better()).
struct CrThr { float s; int j; };
__device__ __forceinline__ void cr_refresh(CrThr& thr, const float* wl, const int* wi, int n, int K) {
  if (n >= K) { thr.s = wl[K - 1]; thr.j = wi[K - 1]; }  // after the writer's __syncwarp: a broadcast read
}

__device__ __forceinline__ void cr_insert(float s, int j, bool valid, float* wl, int* wi, int& n, int K, CrThr& thr) {
  const int lane = threadIdx.x % WARP;
  unsigned cand = __ballot_sync(CR_FULL, valid && better(s, j, thr.s, thr.j));
  if (cand == 0u) return;
  if (__popc(cand) > CR_MERGE_AT) {  // many enter: one merge pass
    cr_merge32(s, j, (cand >> lane) & 1u, wl, wi, n, K);
    cr_refresh(thr, wl, wi, n, K);
    return;
  }
  while (cand) {
    const int src = __ffs(cand) - 1;
    cand &= cand - 1;
    const float cs = __shfl_sync(CR_FULL, s, src);
    const int cj = __shfl_sync(CR_FULL, j, src);
    if (!better(cs, cj, thr.s, thr.j)) continue;  // beaten by an earlier insertion
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
    cr_refresh(thr, wl, wi, n, K);
  }
}

}  // namespace moba
