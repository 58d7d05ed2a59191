// The fused small-context attend of the paged KV cache (cache.cu): ONE launch does routing, attention and the merge
// when every row has at most CF_MAXNB candidate blocks. Grid and CTA as cache_attend (one CTA of CA_THREADS per
// (row, head, slot, sub-block)); each CTA first routes its (row, head) itself: thread j scores candidate block j
// from the centroids (global memory, L2-resident at this size) with the arithmetic of cache_route (the wph
// dimension ranges of its warps, a0..a3 fmaf chains, (a0 + a1) + (a2 + a3) per range, ranges summed in order; the
// open block's sum divided by its count), so every score is bitwise the router's. The exact top-K is the set of
// valid candidates (s > -inf: NaN and -inf never) of rank < K under better() (a strict order: ties to the higher
// block), written ascending into a shared list, then the own block (causal) and -1 padding: the router's sel.
// Then cache_attend runs unchanged on that list (its last CTA per (row, head) merges).
#pragma once
#include "cache-attend.cuh"
#include "cache-topk.cuh"

namespace moba {
constexpr int CF_MAXNB = CA_THREADS;  // candidates per row (one per thread; cache-tables.ts: CACHE.fusedMaxBlocks)
constexpr int CF_MAXD4 = 64;          // D <= 256

template <typename T>
__device__ void cache_fused(const T* q, const float* cents, const float* sums, const T* kpool, const T* vpool, const int* rows, const int* ptab,
                            float* part, unsigned* cnt, T* out, float* lse, int Hq, int Hkv, int D, int B, int topk, int causal, float scale,
                            int vec, int sb, int nsub, int wph) {
  __shared__ float4 cf_q[CF_MAXD4];
  __shared__ float cf_s[CF_MAXNB];
  __shared__ int cf_ok[CF_MAXNB];
  __shared__ int cf_sel[CR_MAXK];
  const int tid = threadIdx.x;
  const i64 rh = (i64)blockIdx.x / nsub / topk;
  const int h = (int)(rh % Hq), row = (int)(rh / Hq), kvh = h / (Hq / Hkv);
  const int t = rows[row * 3], L = rows[row * 3 + 1], pbase = rows[row * 3 + 2];
  const int cb = t / B, nfull = L / B;
  const int nb = min(causal ? cb : (L + B - 1) / B, CF_MAXNB);  // the host guarantees nb <= CF_MAXNB
  const int K = max(0, min(causal ? topk - 1 : topk, CR_MAXK));
  const int D4 = (D + 3) / 4;
  for (int c = tid; c < D4 * 4; c += CA_THREADS) reinterpret_cast<float*>(cf_q)[c] = c < D ? ld(q, rh * D + c) : 0.f;
  __syncthreads();  // cf_q
  const int j = tid;
  bool ok = false;
  float s = 0.f;
  if (j < nb) {
    const int pg = ptab[pbase + j];
    const bool open = j >= nfull;  // non-causal only: the open block holds a sum
    const float* src = (open ? sums : cents) + ((i64)pg * Hkv + kvh) * D;
    const float cntf = (float)(L - nfull * B);
    for (int p = 0; p < wph; ++p) {
      const int c0 = p * D4 / wph, c1 = (p + 1) * D4 / wph;
      float a0 = 0.f, a1 = 0.f, a2 = 0.f, a3 = 0.f;
      for (int c4 = c0; c4 < c1; ++c4) {
        float x[4];
        for (int u = 0; u < 4; ++u) x[u] = c4 * 4 + u < D ? __ldg(src + c4 * 4 + u) : 0.f;
        if (open) for (int u = 0; u < 4; ++u) x[u] = x[u] / cntf;
        const float4 y = cf_q[c4];
        a0 = fmaf(y.x, x[0], a0); a1 = fmaf(y.y, x[1], a1); a2 = fmaf(y.z, x[2], a2); a3 = fmaf(y.w, x[3], a3);
      }
      const float sp = (a0 + a1) + (a2 + a3);
      s = p == 0 ? sp : s + sp;
    }
    ok = s > -INFINITY;
  }
  if (tid < CF_MAXNB) { cf_s[tid] = s; cf_ok[tid] = ok; }
  __syncthreads();  // cf_s, cf_ok
  int rank = 0;
  if (ok) for (int i = 0; i < nb; ++i) rank += cf_ok[i] && better(cf_s[i], i, s, j);
  const bool take = ok && rank < K;
  __syncthreads();  // every thread read cf_ok
  if (tid < CF_MAXNB) cf_ok[tid] = take;
  const int n = __syncthreads_count(take);  // and cf_ok written
  if (take) {
    int pos = 0;
    for (int i = 0; i < j; ++i) pos += cf_ok[i];
    cf_sel[pos] = j;
  }
  const int used = n + (causal ? 1 : 0);
  if (causal && tid == 0 && n < topk && n < CR_MAXK) cf_sel[n] = cb;
  for (int i = used + tid; i < topk && i < CR_MAXK; i += CA_THREADS) cf_sel[i] = -1;
  __syncthreads();  // cf_sel
  cache_attend<T>(q, kpool, vpool, rows, ptab, cf_sel, part, cnt, out, lse, Hq, Hkv, D, B, topk, causal, scale, vec, sb, nsub, true);
}
}  // namespace moba
