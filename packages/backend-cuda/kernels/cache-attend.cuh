// The attend kernels of the paged KV cache (cache.cu): one CTA per (query row, head, selected block, sub-block)
// computing a flash-decoding partial, and the merge of a (row, head)'s partials by the last of its CTAs.
// Included by cache.cu only (mma.cuh: the cp.async helpers).
#pragma once
#include "mma.cuh"

namespace moba {
constexpr int CA_THREADS = 128;  // threads of cache_attend (a sub-block has at most one row per thread)
constexpr int CA_WARPS = CA_THREADS / WARP;

#ifndef MOBA_NO_HALF
__device__ __forceinline__ float bits16(unsigned b, const __half*) { return __half2float(__ushort_as_half((unsigned short)b)); }
__device__ __forceinline__ float bits16(unsigned b, const __nv_bfloat16*) { return __uint_as_float(b << 16); }
#endif

// V consecutive elements from p + i (aligned to V elements) as f32: 4/8/16-byte loads for V > 1.
template <typename T, int V>
__device__ __forceinline__ void ldv(const T* p, i64 i, float* o) {
  if constexpr (V == 1) {
    o[0] = ld(p, i);
  } else if constexpr (sizeof(T) == 4) {
    if constexpr (V == 2) { const float2 x = *reinterpret_cast<const float2*>(p + i); o[0] = x.x; o[1] = x.y; }
    else {
      for (int u = 0; u < V; u += 4) {
        const float4 x = *reinterpret_cast<const float4*>(p + i + u);
        o[u] = x.x; o[u + 1] = x.y; o[u + 2] = x.z; o[u + 3] = x.w;
      }
    }
  } else if constexpr (V == 2) {
    const unsigned x = *reinterpret_cast<const unsigned*>(p + i);
    o[0] = bits16(x & 0xffffu, p); o[1] = bits16(x >> 16, p);
  } else if constexpr (V == 4) {
    const uint2 x = *reinterpret_cast<const uint2*>(p + i);
    o[0] = bits16(x.x & 0xffffu, p); o[1] = bits16(x.x >> 16, p); o[2] = bits16(x.y & 0xffffu, p); o[3] = bits16(x.y >> 16, p);
  } else {
    const uint4 x = *reinterpret_cast<const uint4*>(p + i);
    const unsigned w[4] = {x.x, x.y, x.z, x.w};
    for (int u = 0; u < 4; ++u) { o[2 * u] = bits16(w[u] & 0xffffu, p); o[2 * u + 1] = bits16(w[u] >> 16, p); }
  }
}

// The partials P [topk·nsub][D + 2] of one (row, head), of which the used slots' (a prefix of sel) count, merged by
// one CTA: M = max m_i, f_i = exp2((m_i − M)·scale·log2 e) (0 for an empty partial), l = Σ l_i·f_i (per thread
// over i = tid, tid + CA_THREADS, ..., then the block in a fixed order; NaN if any l_i is NaN), acc[d] = Σ_i P_i[2 + d]·f_i
// in i order → out = acc / l, lse = M·scale + ln l (0 and −inf without keys). Every load is independent of the
// others: a few memory round trips, not one per partial. smem: CA_THREADS floats.
template <typename T>
__device__ void cache_merge_parts(const int* sr, const float* P, T* out, float* lse, int D, int topk, int nsub, float scale, void* smem) {
  __shared__ float mred[CA_WARPS];
  float* fs = reinterpret_cast<float*>(smem);
  const int tid = threadIdx.x, lane = tid % WARP, warp = tid / WARP;
  const float sl = scale * LOG2E;
  int nu = 0;
  for (int i0 = 0; i0 < topk; i0 += CA_THREADS) nu += __syncthreads_count(i0 + tid < topk && sr[i0 + tid] >= 0);
  const int np = nu * nsub;
  float m = -INFINITY;
  bool nan = false;
  for (int i = tid; i < np; i += CA_THREADS) {
    m = fmaxf(m, __ldcg(P + (i64)i * (D + 2)));
    const float li = __ldcg(P + (i64)i * (D + 2) + 1);
    nan |= li != li;
  }
  m = warp_max(m);
  if (lane == 0) mred[warp] = m;
  nan = __syncthreads_or(nan);
  float M = mred[0];
  for (int w = 1; w < CA_WARPS; ++w) M = fmaxf(M, mred[w]);
  float lt = 0.f, a0 = 0.f, a1 = 0.f;  // dims tid and tid + CA_THREADS (D <= 256)
  for (int c0 = 0; c0 < np; c0 += CA_THREADS) {
    const int i = c0 + tid;
    float f = 0.f;
    if (i < np) {
      const float mi = __ldcg(P + (i64)i * (D + 2)), li = __ldcg(P + (i64)i * (D + 2) + 1);
      if (li == li && mi != -INFINITY) {
        f = exp2f((mi - M) * sl);
        lt += li * f;
      }
    }
    __syncthreads();  // the previous chunk's fs read; every thread read mred
    fs[tid] = f;
    __syncthreads();
    const int nk = min(CA_THREADS, np - c0);
    const float* Pc = P + (i64)c0 * (D + 2) + 2;
#pragma unroll 8
    for (int k = 0; k < nk; ++k) {
      const float fk = fs[k];
      if (tid < D) a0 = fmaf(__ldcg(Pc + (i64)k * (D + 2) + tid), fk, a0);
      if (tid + CA_THREADS < D) a1 = fmaf(__ldcg(Pc + (i64)k * (D + 2) + tid + CA_THREADS), fk, a1);
    }
  }
  lt = warp_sum(lt);
  __syncthreads();
  if (lane == 0) mred[warp] = lt;
  __syncthreads();
  float l = mred[0];
  for (int w = 1; w < CA_WARPS; ++w) l += mred[w];
  if (nan) l = NAN;
  const bool empty = l == 0.f;
  const float inv = empty ? 0.f : 1.f / l;
  if (tid < D) st(out, tid, a0 * inv);
  if (tid + CA_THREADS < D) st(out, tid + CA_THREADS, a1 * inv);
  if (tid == 0) *lse = empty ? -INFINITY : M * scale + logf(l);
}

// One CTA (CA_THREADS) per (row, head h, slot, sub-block): block j = sel[row, h, slot] of the row's sequence; the
// sub-block is its tokens [sub·sb, sub·sb + sb) ∩ [0, n) (causal own block: n = t − j·B + 1), sb <= CA_THREADS.
// Its keys and values are staged in shared memory at once (16-byte cp.async where rows are 16-byte multiples;
// rows padded by 16 bytes), so a CTA waits for memory about once. Scores: thread r takes row r (a dot product over D
// in order); max and l = Σ exp2((s − m)·scale·log2 e) are reduced in a fixed order. P·V: item (c, g) accumulates
// dims [c·V, c·V + V) over rows g, g + NG, ...; the NG groups are summed in order. part
// [((row·Hq + h)·topk + slot)·nsub + sub][D + 2] = (m raw max, l, acc[D]) (an empty sub-block: −inf, 0); a
// non-finite score makes l NaN (the row is NaN, as forward.cu). The CTA that arrives last for (row, h) (cnt:
// counters, zero between launches: atomicInc wraps) merges the partials of the used slots in (slot, sub) order →
// out = acc / l, lse = m·scale + ln l (0 and −inf for a row without keys). Dynamic shared memory: K and V rows
// [sb][D·size + 16 bytes] each, q [D], p [CA_THREADS], acc [NG][D] floats.
template <typename T, int V, bool ASYNC>
__device__ void cache_attend_v(const T* q, const T* kpool, const T* vpool, const int* rows, const int* ptab, const int* sel, float* part,
                               unsigned* cnt, T* out, float* lse, int Hq, int Hkv, int D, int B, int topk, int causal, float scale, int sb, int nsub,
                               bool local) {
  extern __shared__ __align__(16) unsigned char ca_smem[];
  __shared__ float red[CA_WARPS];
  __shared__ int last;
  const int tid = threadIdx.x, lane = tid % WARP, warp = tid / WARP;
  const i64 id = blockIdx.x, rs = id / nsub, rh = rs / topk;
  const int sub = (int)(id - rs * nsub), h = (int)(rh % Hq), row = (int)(rh / Hq);
  const int* sr = local ? sel : sel + rh * topk;  // this (row, head)'s list (local: in shared memory, the fused path)
  const int j = sr[rs - rh * topk];
  const float sl = scale * LOG2E;
  const int nc = D / V, NG = max(1, CA_THREADS / nc), items = nc * NG;
  const int rowBytes = D * (int)sizeof(T) + 16;
  T* Ks = reinterpret_cast<T*>(ca_smem);
  T* Vs = reinterpret_cast<T*>(ca_smem + (i64)sb * rowBytes);
  float* qs = reinterpret_cast<float*>(ca_smem + 2 * (i64)sb * rowBytes);
  float* ps = qs + D;
  float* accs = ps + CA_THREADS;
  const int ld_ = rowBytes / (int)sizeof(T);  // shared row stride in elements
  if (j >= 0) {
    const int t = rows[row * 3], L = rows[row * 3 + 1], pbase = rows[row * 3 + 2];
    const int n = (causal && j == t / B) ? t - j * B + 1 : min(B, L - j * B);
    const int r0 = sub * sb, nr = max(0, min(sb, n - r0));
    float* P = part + id * (D + 2);
    if (nr == 0) {  // nothing of this block here
      for (int d = tid; d < D; d += CA_THREADS) P[2 + d] = 0.f;
      if (tid == 0) { P[0] = -INFINITY; P[1] = 0.f; }
    } else {
      const int kvh = h / (Hq / Hkv), C = Hkv * D;
      const i64 base = ((i64)ptab[pbase + j] * B + r0) * C + (i64)kvh * D;
      if constexpr (ASYNC) {  // rows of D·size bytes, a multiple of 16
        const int cpr = D * (int)sizeof(T) / 16;
        for (int e = tid; e < nr * cpr; e += CA_THREADS) {
          const int r = e / cpr, c = e - r * cpr;
          cp_async16(ca_smem + (i64)r * rowBytes + c * 16, kpool + base + (i64)r * C + c * (16 / (int)sizeof(T)), true);
        }
        cp_async_commit();
        for (int e = tid; e < nr * cpr; e += CA_THREADS) {
          const int r = e / cpr, c = e - r * cpr;
          cp_async16(ca_smem + ((i64)sb + r) * rowBytes + c * 16, vpool + base + (i64)r * C + c * (16 / (int)sizeof(T)), true);
        }
        cp_async_commit();
      } else {
        for (int e = tid; e < nr * D; e += CA_THREADS) {
          const int r = e / D, d = e - r * D;
          Ks[r * ld_ + d] = kpool[base + (i64)r * C + d];
          Vs[r * ld_ + d] = vpool[base + (i64)r * C + d];
        }
      }
      for (int d = tid; d < D; d += CA_THREADS) qs[d] = ld(q, rh * D + d);
      if constexpr (ASYNC) cp_async_wait<1>();  // the keys
      __syncthreads();
      float s = -INFINITY;
      bool bad = false;
      if (tid < nr) {
        const T* kp = Ks + tid * ld_;
        s = 0.f;
        for (int d = 0; d < D; d += V) {
          float x[V];
          ldv<T, V>(kp, d, x);
          for (int e = 0; e < V; ++e) s = fmaf(qs[d + e], x[e], s);
        }
        bad = not_finite(s);
      }
      const float wm = warp_max(s);
      if (lane == 0) red[warp] = wm;
      __syncthreads();
      float M = red[0];
      for (int w = 1; w < CA_WARPS; ++w) M = fmaxf(M, red[w]);
      const float p = tid < nr ? exp2f((s - M) * sl) : 0.f;
      ps[tid] = p;
      const float wl = warp_sum(p);
      if constexpr (ASYNC) cp_async_wait<0>();  // the values
      const bool anybad = __syncthreads_or(bad);  // ps, Vs; every thread read red
      if (lane == 0) red[warp] = wl;
      for (int it = tid; it < items; it += CA_THREADS) {
        const int c = it % nc, g = it / nc;
        float acc[V];
        for (int e = 0; e < V; ++e) acc[e] = 0.f;
        for (int r = g; r < nr; r += NG) {
          const float pr = ps[r];
          float x[V];
          ldv<T, V>(Vs + r * ld_, c * V, x);
          for (int e = 0; e < V; ++e) acc[e] = fmaf(pr, x[e], acc[e]);
        }
        for (int e = 0; e < V; ++e) accs[g * D + c * V + e] = acc[e];
      }
      __syncthreads();
      for (int d = tid; d < D; d += CA_THREADS) {
        float a = 0.f;
        for (int g = 0; g < NG; ++g) a += accs[g * D + d];
        P[2 + d] = a;
      }
      if (tid == 0) {
        float l = red[0];
        for (int w = 1; w < CA_WARPS; ++w) l += red[w];
        P[0] = M;
        P[1] = anybad ? NAN : l;
      }
    }
  }
  // the last CTA of (row, h) merges
  const int parts = topk * nsub;
  __threadfence();
  __syncthreads();
  if (tid == 0) last = atomicInc(cnt + rh, (unsigned)(parts - 1)) == (unsigned)(parts - 1);
  __syncthreads();
  if (!last) return;
  __threadfence();
  cache_merge_parts(sr, part + rh * parts * (D + 2), out + rh * D, lse + rh, D, topk, nsub, scale, ca_smem);
}

// V: elements per vector load (8 for 16-bit types only; D a multiple of V); async: rows staged by 16-byte cp.async.
// local (the fused path, cache-fused.cuh): sel is the CTA's own (row, head) list [topk] in shared memory, not [Tq, Hq, topk].
template <typename T>
__device__ void cache_attend(const T* q, const T* kpool, const T* vpool, const int* rows, const int* ptab, const int* sel, float* part, unsigned* cnt,
                             T* out, float* lse, int Hq, int Hkv, int D, int B, int topk, int causal, float scale, int vec, int sb, int nsub, bool local = false) {
#define CA_ARGS q, kpool, vpool, rows, ptab, sel, part, cnt, out, lse, Hq, Hkv, D, B, topk, causal, scale, sb, nsub, local
  if ((D * (int)sizeof(T)) % 16 == 0) {
    if (vec == 8 && sizeof(T) == 2) cache_attend_v<T, 8, true>(CA_ARGS);
    else cache_attend_v<T, 4, true>(CA_ARGS);
  } else if (vec == 4) cache_attend_v<T, 4, false>(CA_ARGS);
  else if (vec == 2) cache_attend_v<T, 2, false>(CA_ARGS);
  else cache_attend_v<T, 1, false>(CA_ARGS);
#undef CA_ARGS
}
}  // namespace moba
