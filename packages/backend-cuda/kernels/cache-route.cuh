// The router of the paged KV cache (cache.cu): per (query row, kv head) the page centroids of its sequence in
// tiles of CR_CT blocks shared by the query heads of that kv head; each head keeps an exact top-k list
// (ties to the higher block index; NaN and -inf never win). Included by cache.cu only.
#pragma once
#include "common.cuh"

namespace moba {
constexpr int CR_CT = 32;    // centroids per routing tile (one per lane)
constexpr int CR_MAXK = 64;  // largest topk (two list entries per lane; cache-tables.ts checks it)

// rows[r] = (t, L, pbase): query row r sits at key position t of a sequence of L keys whose page table starts
// at ptab[pbase]. sel [Tq, Hq, topk]: the selected blocks, ascending, -1 padded.

__device__ __forceinline__ bool better(float s1, int j1, float s2, int j2) { return s1 > s2 || (s1 == s2 && j1 > j2); }

// Grid (Tq, Hkv, ceil(G / hpc)), blockDim = 32·max(hpc, 4): warp w < hpc routes query head
// kvh·G + blockIdx.z·hpc + w; all warps load the centroid tiles they share. Dynamic shared memory:
// tile [CR_CT][D+1], q [hpc][D], list scores [hpc][topk], list blocks [hpc][topk].
template <typename T>
__device__ void cache_route(const T* q, const float* cents, const float* sums, const int* rows, const int* ptab, int* sel,
                            int Hq, int Hkv, int D, int B, int topk, int causal, int hpc) {
  extern __shared__ float cr_smem[];
  float* tile = cr_smem;
  float* qs = tile + CR_CT * (D + 1);
  float* ls = qs + hpc * D;
  int* li = reinterpret_cast<int*>(ls + hpc * topk);
  const int lane = threadIdx.x % WARP, warp = threadIdx.x / WARP;
  const int row = blockIdx.x, kvh = blockIdx.y, G = Hq / Hkv;
  const int g = blockIdx.z * hpc + warp;
  const bool active = warp < hpc && g < G;
  const int h = kvh * G + g;
  const int t = rows[row * 3], L = rows[row * 3 + 1], pbase = rows[row * 3 + 2];
  const int cb = t / B, nfull = L / B;
  const int nb = causal ? cb : (L + B - 1) / B;  // competing blocks
  const int K = causal ? topk - 1 : topk;       // list length (causal: the own block is added at the end)
  float* wq = qs + warp * D;
  float* wl = ls + warp * topk;
  int* wi = li + warp * topk;
  if (active) for (int d = lane; d < D; d += WARP) wq[d] = ld(q, ((i64)row * Hq + h) * D + d);
  int n = 0;
  for (int j0 = 0; K > 0 && j0 < nb; j0 += CR_CT) {
    __syncthreads();
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
    unsigned cand = __ballot_sync(0xffffffffu, valid && (n < K || better(s, j, wl[K - 1], wi[K - 1])));
    while (cand) {
      const int src = __ffs(cand) - 1;
      cand &= cand - 1;
      const float cs = __shfl_sync(0xffffffffu, s, src);
      const int cj = j0 + src;
      if (n == K && !better(cs, cj, wl[K - 1], wi[K - 1])) continue;  // beaten by an insertion of this tile
      int pos = 0;  // entries better than the candidate (the list is sorted best first)
      for (int b0 = 0; b0 < n; b0 += WARP) {
        const int i = b0 + lane;
        pos += __popc(__ballot_sync(0xffffffffu, i < n && better(wl[i], wi[i], cs, cj)));
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
  if (!active) return;
  __syncwarp();
  int* out = sel + ((i64)row * Hq + h) * topk;
  for (int i = lane; i < n; i += WARP) {
    int rank = 0;
    for (int i2 = 0; i2 < n; ++i2) rank += wi[i2] < wi[i];
    out[rank] = wi[i];
  }
  const int used = n + (causal ? 1 : 0);
  if (causal && lane == 0) out[n] = cb;
  for (int i = used + lane; i < topk; i += WARP) out[i] = -1;
}
}  // namespace moba
