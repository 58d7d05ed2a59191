// Paged KV cache (SPEC §9). A page holds B tokens of one sequence: keys (after kconv) and values [B, C]
// in the storage dtype (C = Hkv·D), its f32 key sum [C] and, once full, its f32 centroid [C] = sum / B.
// Per sequence slot: the last W−1 raw keys [W−1, C] f32 (the kconv state across appends).
//   append: cache_append_kv (k' and v into the pages, one thread per (new row, channel)), then
//           cache_append_sum (each touched page's sum in token order, its centroid when full, the new state).
//   attend: cache_route (top-k per query head over the page centroids, split over CTAs), cache_attend (one CTA per
//           (query row, head, selected slot): a flash-decoding partial m, l, acc in f32; the last CTA of a
//           (row, head) merges its partials in slot order → out, lse). No float atomics: every sum has a fixed order.
#include "common.cuh"
#include "cache-route.cuh"
using namespace moba;

constexpr int CA_THREADS = 128;              // threads of cache_attend (a token chunk)
constexpr int CA_WARPS = CA_THREADS / WARP;
constexpr int CA_ITEMS = 2;                  // P·V items per thread: D / V <= 2·CA_THREADS (D <= 256)
constexpr int CACHE_MAXW = 8;  // largest kconv width

// ---------------------------------------------------------------------------------------------- append

// ent[e] = (slot, pos0, pbase): the sequence's state slot, its length before the append, the offset of its
// page table in ptab. cu[e] = first row of k, v for entry e (cu[nent] = T_).
template <typename T>
__device__ void cache_append_kv(const T* k, const T* v, const float* w, const float* state, T* kpool, T* vpool, const int* cu,
                                const int* ent, const int* ptab, int nent, i64 T_, int C, int W, int B) {
  for (i64 e = blockIdx.x * (i64)blockDim.x + threadIdx.x; e < T_ * C; e += (i64)gridDim.x * blockDim.x) {
    const i64 t = e / C;
    const int c = (int)(e - t * C);
    const int b = upper_index(cu, nent, t);
    const int slot = ent[b * 3], pos0 = ent[b * 3 + 1], pbase = ent[b * 3 + 2];
    const i64 row0 = cu[b];
    const int pos = pos0 + (int)(t - row0);
    float out = ld(k, e);
    if (W > 0) {
      // as kconv.cu's conv_z: z = sum_l w[c, W-1-l] * k[pos-l, c], taps before the sequence start read zero;
      // taps before this append come from the state (raw keys at positions pos0-(W-1) .. pos0-1)
      float z = 0.f;
      for (int l = 0; l < W && pos - l >= 0; ++l) {
        const int p = pos - l;
        const float x = p >= pos0 ? ld(k, (row0 + (p - pos0)) * C + c) : state[((i64)slot * (W - 1) + (p - pos0 + W - 1)) * C + c];
        z += w[(i64)c * W + (W - 1 - l)] * x;
      }
      out = out + z / (1.f + expf(-z));
    }
    const i64 dst = ((i64)ptab[pbase + pos / B] * B + pos % B) * C + c;
    st(kpool, dst, out);
    vpool[dst] = v[e];
  }
}

// Items [0, nwork·C): work[i] = (page, lo, hi): sum of the page's rows [lo, hi) added to its sum (kept when lo > 0),
// in token order; the centroid when hi == B. Items [nwork·C, (nwork + nstate)·C): the new state of entry e.
template <typename T>
__device__ void cache_append_sum(const T* k, const T* kpool, float* sums, float* cents, float* state, const int* cu, const int* ent,
                                 const int* work, int nwork, int nstate, int C, int W, int B) {
  const i64 nsum = (i64)nwork * C, n = nsum + (i64)nstate * C;
  for (i64 e = blockIdx.x * (i64)blockDim.x + threadIdx.x; e < n; e += (i64)gridDim.x * blockDim.x) {
    if (e < nsum) {
      const int i = (int)(e / C), c = (int)(e - (i64)i * C);
      const int page = work[i * 3], lo = work[i * 3 + 1], hi = work[i * 3 + 2];
      const i64 o = (i64)page * C + c;
      float s = lo > 0 ? sums[o] : 0.f;
      for (int r = lo; r < hi; ++r) s += ld(kpool, ((i64)page * B + r) * C + c);
      sums[o] = s;
      if (hi == B) cents[o] = s / (float)B;
    } else {
      const i64 f = e - nsum;
      const int b = (int)(f / C), c = (int)(f - (i64)b * C);
      const int slot = ent[b * 3], pos0 = ent[b * 3 + 1];
      const i64 row0 = cu[b];
      const int count = (int)(cu[b + 1] - row0);
      float* sp = state + (i64)slot * (W - 1) * C + c;
      float old[CACHE_MAXW];
      for (int j = 0; j < W - 1; ++j) old[j] = sp[(i64)j * C];
      for (int j = 0; j < W - 1; ++j) {
        const int p = pos0 + count - (W - 1) + j;  // the position this state row holds after the append
        sp[(i64)j * C] = p >= pos0 ? ld(k, (row0 + (p - pos0)) * C + c) : p >= 0 ? old[j + count] : 0.f;
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------- attend

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

// One CTA (CA_THREADS) per (row, head h, slot): block j = sel[row, h, slot] of the row's sequence, its tokens
// [0, n) (causal own block: up to t), in chunks of CA_THREADS tokens with an online softmax. Scores: thread r takes
// token r of the chunk (a dot product over D in order); the chunk's max is reduced in a fixed order. P·V: item
// (c, g) accumulates dims [c·V, c·V + V) over the chunk's tokens g, g + NG, ...; the NG groups are summed in order
// at the end. part [(row·Hq + h)·topk + slot][D + 2] = (m raw max, l, acc[D]); a non-finite score makes l NaN (the
// row is NaN, as forward.cu). The CTA that arrives last for (row, h) (cnt: counters, zero between launches:
// atomicInc wraps) merges the used slots' partials in slot order → out = acc / l, lse = m·scale + ln l (0 and −inf
// for a row without keys). Dynamic shared memory: q [D], p [CA_THREADS], acc [NG][D] floats.
template <typename T, int V>
__device__ void cache_attend_v(const T* q, const T* kpool, const T* vpool, const int* rows, const int* ptab, const int* sel, float* part,
                               unsigned* cnt, T* out, float* lse, int Hq, int Hkv, int D, int B, int topk, int causal, float scale) {
  extern __shared__ float ca_smem[];
  __shared__ float red[CA_WARPS];
  __shared__ int last;
  const int tid = threadIdx.x, lane = tid % WARP, warp = tid / WARP;
  const i64 id = blockIdx.x, rh = id / topk;
  const int h = (int)(rh % Hq), row = (int)(rh / Hq);
  const int j = sel[id];
  const float sl = scale * LOG2E;
  const int nc = D / V, NG = max(1, CA_THREADS / nc), items = nc * NG;
  if (j >= 0) {
    const int t = rows[row * 3], L = rows[row * 3 + 1], pbase = rows[row * 3 + 2];
    const int n = (causal && j == t / B) ? t - j * B + 1 : min(B, L - j * B);
    const int kvh = h / (Hq / Hkv), C = Hkv * D;
    const i64 page = ptab[pbase + j];
    const T* kb = kpool + page * B * C + (i64)kvh * D;
    const T* vb = vpool + page * B * C + (i64)kvh * D;
    float* qs = ca_smem;
    float* ps = qs + D;
    float* accs = ps + CA_THREADS;
    for (int d = tid; d < D; d += CA_THREADS) qs[d] = ld(q, rh * D + d);
    float M = -INFINITY, lt = 0.f;  // running max; this thread's share of l
    float acc[CA_ITEMS][V];
    for (int i = 0; i < CA_ITEMS; ++i) for (int e = 0; e < V; ++e) acc[i][e] = 0.f;
    bool bad = false;
    for (int r0 = 0; r0 < n; r0 += CA_THREADS) {
      __syncthreads();  // qs written; the previous chunk's ps read
      const int r = r0 + tid;
      float s = -INFINITY;
      if (r < n) {
        const T* kp = kb + (i64)r * C;
        s = 0.f;
#pragma unroll 4
        for (int d = 0; d < D; d += V) {
          float x[V];
          ldv<T, V>(kp, d, x);
          for (int e = 0; e < V; ++e) s = fmaf(qs[d + e], x[e], s);
        }
        bad |= not_finite(s);
      }
      const float wm = warp_max(s);
      if (lane == 0) red[warp] = wm;
      __syncthreads();
      float mc = red[0];
      for (int w = 1; w < CA_WARPS; ++w) mc = fmaxf(mc, red[w]);
      const float mn = fmaxf(M, mc);
      const float alpha = mn == -INFINITY ? 1.f : exp2f((M - mn) * sl);
      const float p = r < n && mn != -INFINITY ? exp2f((s - mn) * sl) : 0.f;
      ps[tid] = p;
      lt = lt * alpha + p;
      M = mn;
      for (int i = 0; i < CA_ITEMS; ++i) for (int e = 0; e < V; ++e) acc[i][e] *= alpha;
      __syncthreads();  // ps
      const int nr = min(CA_THREADS, n - r0);
      for (int i = 0; i < CA_ITEMS; ++i) {
        const int it = tid + i * CA_THREADS;
        if (it >= items) break;
        const int c = it % nc, g = it / nc;
#pragma unroll 4
        for (int rr = g; rr < nr; rr += NG) {
          const float pr = ps[rr];
          float x[V];
          ldv<T, V>(vb + (i64)(r0 + rr) * C, c * V, x);
          for (int e = 0; e < V; ++e) acc[i][e] = fmaf(pr, x[e], acc[i][e]);
        }
      }
    }
    for (int i = 0; i < CA_ITEMS; ++i) {
      const int it = tid + i * CA_THREADS;
      if (it < items) for (int e = 0; e < V; ++e) accs[(it / nc) * D + (it % nc) * V + e] = acc[i][e];
    }
    const float wl = warp_sum(lt);
    __syncthreads();  // accs; every thread read red
    if (lane == 0) red[warp] = wl;
    const bool anybad = __syncthreads_or(bad);
    float* P = part + id * (D + 2);
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
  // the last CTA of (row, h) merges
  __threadfence();
  __syncthreads();
  if (tid == 0) last = atomicInc(cnt + rh, (unsigned)(topk - 1)) == (unsigned)(topk - 1);
  __syncthreads();
  if (!last) return;
  __threadfence();
  const int* sr = sel + rh * topk;
  const float* P = part + rh * topk * (D + 2);
  float M = -INFINITY;
  for (int i = 0; i < topk && sr[i] >= 0; ++i) M = fmaxf(M, __ldcg(P + (i64)i * (D + 2)));
  float l = 0.f;
  for (int i = 0; i < topk && sr[i] >= 0; ++i) {
    const float mi = __ldcg(P + (i64)i * (D + 2)), li = __ldcg(P + (i64)i * (D + 2) + 1);
    if (li != li) { l = NAN; continue; }
    if (mi != -INFINITY) l += li * exp2f((mi - M) * sl);
  }
  const bool empty = l == 0.f;
  const float inv = empty ? 0.f : 1.f / l;
  for (int d = tid; d < D; d += CA_THREADS) {
    float a = 0.f;
    for (int i = 0; i < topk && sr[i] >= 0; ++i) {
      const float* Pi = P + (i64)i * (D + 2);
      const float mi = __ldcg(Pi), li = __ldcg(Pi + 1);
      if (li != li || mi == -INFINITY) continue;
      a += __ldcg(Pi + 2 + d) * exp2f((mi - M) * sl);
    }
    st(out, rh * D + d, a * inv);
  }
  if (tid == 0) lse[rh] = empty ? -INFINITY : M * scale + logf(l);
}

// V: elements per vector load (8 for 16-bit types only; D a multiple of V).
template <typename T>
__device__ void cache_attend(const T* q, const T* kpool, const T* vpool, const int* rows, const int* ptab, const int* sel, float* part, unsigned* cnt,
                             T* out, float* lse, int Hq, int Hkv, int D, int B, int topk, int causal, float scale, int vec) {
  if (vec == 8 && sizeof(T) == 2) cache_attend_v<T, 8>(q, kpool, vpool, rows, ptab, sel, part, cnt, out, lse, Hq, Hkv, D, B, topk, causal, scale);
  else if (vec == 4) cache_attend_v<T, 4>(q, kpool, vpool, rows, ptab, sel, part, cnt, out, lse, Hq, Hkv, D, B, topk, causal, scale);
  else if (vec == 2) cache_attend_v<T, 2>(q, kpool, vpool, rows, ptab, sel, part, cnt, out, lse, Hq, Hkv, D, B, topk, causal, scale);
  else cache_attend_v<T, 1>(q, kpool, vpool, rows, ptab, sel, part, cnt, out, lse, Hq, Hkv, D, B, topk, causal, scale);
}

#define CACHE_ENTRIES(N, T)                                                                                                     \
  extern "C" __global__ void cache_append_kv_##N(const T* k, const T* v, const float* w, const float* state, T* kpool, T* vpool, const int* cu, const int* ent, const int* ptab, int nent, i64 T_, int C, int W, int B) { \
    cache_append_kv<T>(k, v, w, state, kpool, vpool, cu, ent, ptab, nent, T_, C, W, B);                                          \
  }                                                                                                                              \
  extern "C" __global__ void cache_append_sum_##N(const T* k, const T* kpool, float* sums, float* cents, float* state, const int* cu, const int* ent, const int* work, int nwork, int nstate, int C, int W, int B) { \
    cache_append_sum<T>(k, kpool, sums, cents, state, cu, ent, work, nwork, nstate, C, W, B);                                  \
  }                                                                                                                              \
  extern "C" __global__ void cache_route_##N(const T* q, const float* cents, const float* sums, const int* rows, const int* ptab, int* sel, float* plist, unsigned* cnt, int Hq, int Hkv, int D, int B, int topk, int causal, int hpc, int tps, int nbuf) { \
    cache_route<T>(q, cents, sums, rows, ptab, sel, plist, cnt, Hq, Hkv, D, B, topk, causal, hpc, tps, nbuf);                   \
  }                                                                                                                              \
  extern "C" __global__ void __launch_bounds__(CA_THREADS) cache_attend_##N(const T* q, const T* kpool, const T* vpool, const int* rows, const int* ptab, const int* sel, float* part, unsigned* cnt, T* out, float* lse, int Hq, int Hkv, int D, int B, int topk, int causal, float scale, int vec) { \
    cache_attend<T>(q, kpool, vpool, rows, ptab, sel, part, cnt, out, lse, Hq, Hkv, D, B, topk, causal, scale, vec);            \
  }
MOBA_DTYPES(CACHE_ENTRIES)
