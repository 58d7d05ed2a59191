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
                               unsigned* cnt, T* out, float* lse, int Hq, int Hkv, int D, int B, int topk, int causal, float scale, int sb, int nsub) {
  extern __shared__ __align__(16) unsigned char ca_smem[];
  __shared__ float red[CA_WARPS];
  __shared__ int last;
  const int tid = threadIdx.x, lane = tid % WARP, warp = tid / WARP;
  const i64 id = blockIdx.x, rs = id / nsub, rh = rs / topk;
  const int sub = (int)(id - rs * nsub), h = (int)(rh % Hq), row = (int)(rh / Hq);
  const int j = sel[rs];
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
  cache_merge_parts(sel + rh * topk, part + rh * parts * (D + 2), out + rh * D, lse + rh, D, topk, nsub, scale, ca_smem);
}

// V: elements per vector load (8 for 16-bit types only; D a multiple of V); async: rows staged by 16-byte cp.async.
template <typename T>
__device__ void cache_attend(const T* q, const T* kpool, const T* vpool, const int* rows, const int* ptab, const int* sel, float* part, unsigned* cnt,
                             T* out, float* lse, int Hq, int Hkv, int D, int B, int topk, int causal, float scale, int vec, int sb, int nsub) {
#define CA_ARGS q, kpool, vpool, rows, ptab, sel, part, cnt, out, lse, Hq, Hkv, D, B, topk, causal, scale, sb, nsub
  if ((D * (int)sizeof(T)) % 16 == 0) {
    if (vec == 8 && sizeof(T) == 2) cache_attend_v<T, 8, true>(CA_ARGS);
    else cache_attend_v<T, 4, true>(CA_ARGS);
  } else if (vec == 4) cache_attend_v<T, 4, false>(CA_ARGS);
  else if (vec == 2) cache_attend_v<T, 2, false>(CA_ARGS);
  else cache_attend_v<T, 1, false>(CA_ARGS);
#undef CA_ARGS
}

#define CACHE_ENTRIES(N, T)                                                                                                     \
  extern "C" __global__ void cache_append_kv_##N(const T* k, const T* v, const float* w, const float* state, T* kpool, T* vpool, const int* cu, const int* ent, const int* ptab, int nent, i64 T_, int C, int W, int B) { \
    cache_append_kv<T>(k, v, w, state, kpool, vpool, cu, ent, ptab, nent, T_, C, W, B);                                          \
  }                                                                                                                              \
  extern "C" __global__ void cache_append_sum_##N(const T* k, const T* kpool, float* sums, float* cents, float* state, const int* cu, const int* ent, const int* work, int nwork, int nstate, int C, int W, int B) { \
    cache_append_sum<T>(k, kpool, sums, cents, state, cu, ent, work, nwork, nstate, C, W, B);                                  \
  }                                                                                                                              \
  extern "C" __global__ void __launch_bounds__(256, 3) cache_route_##N(const T* q, const float* cents, const float* sums, const int* rows, const int* ptab, int* sel, float* plist, unsigned* cnt, int Hq, int Hkv, int D, int B, int topk, int causal, int hpc, int tps, int nbuf) { \
    cache_route<T>(q, cents, sums, rows, ptab, sel, plist, cnt, Hq, Hkv, D, B, topk, causal, hpc, tps, nbuf);                   \
  }                                                                                                                              \
  extern "C" __global__ void __launch_bounds__(CA_THREADS) cache_attend_##N(const T* q, const T* kpool, const T* vpool, const int* rows, const int* ptab, const int* sel, float* part, unsigned* cnt, T* out, float* lse, int Hq, int Hkv, int D, int B, int topk, int causal, float scale, int vec, int sb, int nsub) { \
    cache_attend<T>(q, kpool, vpool, rows, ptab, sel, part, cnt, out, lse, Hq, Hkv, D, B, topk, causal, scale, vec, sb, nsub);  \
  }
MOBA_DTYPES(CACHE_ENTRIES)
