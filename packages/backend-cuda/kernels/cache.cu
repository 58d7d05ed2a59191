// Paged KV cache (SPEC §9). A page holds B tokens of one sequence: keys (after kconv) and values [B, C]
// in the storage dtype (C = Hkv·D), its f32 key sum [C] and, once full, its f32 centroid [C] = sum / B.
// Per sequence slot: the last W−1 raw keys [W−1, C] f32 (the kconv state across appends).
//   append: cache_append_kv (k' and v into the pages, one thread per (new row, channel)), then
//           cache_append_sum (each touched page's sum in token order, its centroid when full, the new state).
//   attend: cache_route (top-k per query head over the page centroids, split over CTAs), cache_attend (one CTA per
//           (query row, head, selected slot): a flash-decoding partial m, l, acc in f32), cache_merge
//           (the partials of a row in slot order → out, lse). No float atomics: every sum has a fixed order.
#include "common.cuh"
#include "cache-route.cuh"
using namespace moba;

constexpr int CA_WARPS = 4;    // warps of cache_attend
constexpr int CA_U = 4;        // tokens a warp scores at once
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

// V consecutive elements from p + i (aligned to V elements) as f32: one 4/8/16-byte load for V > 1.
template <typename T, int V>
__device__ __forceinline__ void ldv(const T* p, i64 i, float* o) {
  if constexpr (V == 1) {
    o[0] = ld(p, i);
  } else if constexpr (sizeof(T) == 4) {
    if constexpr (V == 2) { const float2 x = *reinterpret_cast<const float2*>(p + i); o[0] = x.x; o[1] = x.y; }
    else { const float4 x = *reinterpret_cast<const float4*>(p + i); o[0] = x.x; o[1] = x.y; o[2] = x.z; o[3] = x.w; }
  } else if constexpr (V == 2) {
    const unsigned x = *reinterpret_cast<const unsigned*>(p + i);
    o[0] = bits16(x & 0xffffu, p); o[1] = bits16(x >> 16, p);
  } else {
    const uint2 x = *reinterpret_cast<const uint2*>(p + i);
    o[0] = bits16(x.x & 0xffffu, p); o[1] = bits16(x.x >> 16, p); o[2] = bits16(x.y & 0xffffu, p); o[3] = bits16(x.y >> 16, p);
  }
}

// One CTA per (row, head h, slot): block j = sel[row, h, slot] of the row's sequence, tokens [0, n) of its page
// (causal own block: up to t). Lane dims (i·32 + lane)·V + [0, V). Warp w takes tokens w·CA_U + [0, CA_U), then
// every CA_WARPS·CA_U-th; the warps' states are merged in warp order. part [(row·Hq + h)·topk + slot][D + 2] =
// (m raw max, l, acc[D]); a non-finite score makes l NaN (the row is NaN, as forward.cu).
template <typename T, int V>
__device__ void cache_attend_v(const T* q, const T* kpool, const T* vpool, const int* rows, const int* ptab, const int* sel, float* part,
                               int Hq, int Hkv, int D, int B, int topk, int causal, float scale) {
  constexpr int MI = 8 / V;  // D <= 256: at most 8 dims per lane
  __shared__ float red[CA_WARPS][2];
  extern __shared__ float ca_smem[];  // [CA_WARPS][D] accumulators
  const int lane = threadIdx.x % WARP, warp = threadIdx.x / WARP;
  const i64 id = blockIdx.x;
  const i64 rh = id / topk;
  const int h = (int)(rh % Hq), row = (int)(rh / Hq);
  const int j = sel[id];
  if (j < 0) return;  // unused slot: the merge skips it
  const int t = rows[row * 3], L = rows[row * 3 + 1], pbase = rows[row * 3 + 2];
  const int n = (causal && j == t / B) ? t - j * B + 1 : min(B, L - j * B);
  const int kvh = h / (Hq / Hkv), C = Hkv * D;
  const i64 page = ptab[pbase + j];
  const float sl = scale * LOG2E;
  const int ni = (D + WARP * V - 1) / (WARP * V);
  float qv[MI][V], acc[MI][V];
  for (int i = 0; i < MI; ++i) {
    for (int u = 0; u < V; ++u) { qv[i][u] = 0.f; acc[i][u] = 0.f; }
    const int d = (i * WARP + lane) * V;
    if (i < ni && d < D) ldv<T, V>(q, rh * D + d, qv[i]);
  }
  float m = -INFINITY, l = 0.f;
  bool bad = false;
  for (int r0 = warp * CA_U; r0 < n; r0 += CA_WARPS * CA_U) {
    float x[CA_U];
    for (int u = 0; u < CA_U; ++u) {
      float part_dot = 0.f;
      if (r0 + u < n) {
        const T* kp = kpool + (page * B + r0 + u) * C + (i64)kvh * D;
        for (int i = 0; i < MI; ++i) {
          const int d = (i * WARP + lane) * V;
          if (i < ni && d < D) {
            float kv[V];
            ldv<T, V>(kp, d, kv);
            for (int e = 0; e < V; ++e) part_dot += qv[i][e] * kv[e];
          }
        }
      }
      x[u] = warp_sum(part_dot);
    }
    float mc = -INFINITY;
    for (int u = 0; u < CA_U; ++u) {
      if (r0 + u >= n) x[u] = -INFINITY;
      else { bad |= not_finite(x[u]); mc = fmaxf(mc, x[u]); }
    }
    const float mn = fmaxf(m, mc);
    if (mn == -INFINITY) continue;
    const float alpha = exp2f((m - mn) * sl);
    l *= alpha;
    for (int i = 0; i < MI; ++i) for (int e = 0; e < V; ++e) acc[i][e] *= alpha;
    for (int u = 0; u < CA_U; ++u) {
      if (r0 + u >= n) continue;
      const float p = exp2f((x[u] - mn) * sl);
      l += p;
      const T* vp = vpool + (page * B + r0 + u) * C + (i64)kvh * D;
      for (int i = 0; i < MI; ++i) {
        const int d = (i * WARP + lane) * V;
        if (i < ni && d < D) {
          float vv[V];
          ldv<T, V>(vp, d, vv);
          for (int e = 0; e < V; ++e) acc[i][e] += p * vv[e];
        }
      }
    }
    m = mn;
  }
  // merge the warps in warp order
  float* sacc = ca_smem + warp * D;
  for (int i = 0; i < MI; ++i) {
    const int d = (i * WARP + lane) * V;
    if (i < ni && d < D) for (int e = 0; e < V; ++e) sacc[d + e] = acc[i][e];
  }
  if (lane == 0) { red[warp][0] = m; red[warp][1] = bad ? NAN : l; }
  __syncthreads();
  float M = -INFINITY;
  for (int w = 0; w < CA_WARPS; ++w) M = fmaxf(M, red[w][0]);
  float* P = part + id * (D + 2);
  for (int d = threadIdx.x; d < D; d += blockDim.x) {
    float a = 0.f;
    for (int w = 0; w < CA_WARPS; ++w) if (red[w][0] != -INFINITY) a += ca_smem[w * D + d] * exp2f((red[w][0] - M) * sl);
    P[2 + d] = a;
  }
  if (threadIdx.x == 0) {
    float ls = 0.f;
    for (int w = 0; w < CA_WARPS; ++w) {
      if (red[w][1] != red[w][1]) ls = NAN;  // NaN: a non-finite score
      else if (red[w][0] != -INFINITY) ls += red[w][1] * exp2f((red[w][0] - M) * sl);
    }
    P[0] = M;
    P[1] = ls;
  }
}

template <typename T>
__device__ void cache_attend(const T* q, const T* kpool, const T* vpool, const int* rows, const int* ptab, const int* sel, float* part,
                             int Hq, int Hkv, int D, int B, int topk, int causal, float scale, int vec) {
  if (vec == 4) cache_attend_v<T, 4>(q, kpool, vpool, rows, ptab, sel, part, Hq, Hkv, D, B, topk, causal, scale);
  else if (vec == 2) cache_attend_v<T, 2>(q, kpool, vpool, rows, ptab, sel, part, Hq, Hkv, D, B, topk, causal, scale);
  else cache_attend_v<T, 1>(q, kpool, vpool, rows, ptab, sel, part, Hq, Hkv, D, B, topk, causal, scale);
}

// One warp per (row, head): the partials of its used slots in slot order → out = acc / l, lse = m·scale + ln l
// (0 and -inf for a row without keys, NaN where a partial is NaN).
template <typename T>
__device__ void cache_merge(const float* part, const int* sel, T* out, float* lse, i64 nrh, int D, int topk, float scale) {
  const int lane = threadIdx.x % WARP;
  const float sl = scale * LOG2E;
  for (i64 rh = (blockIdx.x * (i64)blockDim.x + threadIdx.x) / WARP; rh < nrh; rh += (i64)gridDim.x * blockDim.x / WARP) {
    const int* s = sel + rh * topk;
    const float* P = part + rh * topk * (D + 2);
    float M = -INFINITY;
    for (int i = 0; i < topk && s[i] >= 0; ++i) M = fmaxf(M, P[(i64)i * (D + 2)]);
    float l = 0.f, acc[8];
    for (int r = 0; r < 8; ++r) acc[r] = 0.f;
    for (int i = 0; i < topk && s[i] >= 0; ++i) {
      const float* Pi = P + (i64)i * (D + 2);
      const float mi = Pi[0], li = Pi[1];
      if (li != li) { l = NAN; continue; }
      if (mi == -INFINITY) continue;
      const float f = exp2f((mi - M) * sl);
      l += li * f;
      for (int r = 0; r < 8; ++r) if (lane + r * WARP < D) acc[r] += Pi[2 + lane + r * WARP] * f;
    }
    const bool empty = l == 0.f;
    const float inv = empty ? 0.f : 1.f / l;
    for (int r = 0; r < 8; ++r) if (lane + r * WARP < D) st(out, rh * D + lane + r * WARP, acc[r] * inv);
    if (lane == 0) lse[rh] = empty ? -INFINITY : M * scale + logf(l);
  }
}

#define CACHE_ENTRIES(N, T)                                                                                                     \
  extern "C" __global__ void cache_append_kv_##N(const T* k, const T* v, const float* w, const float* state, T* kpool, T* vpool, const int* cu, const int* ent, const int* ptab, int nent, i64 T_, int C, int W, int B) { \
    cache_append_kv<T>(k, v, w, state, kpool, vpool, cu, ent, ptab, nent, T_, C, W, B);                                          \
  }                                                                                                                              \
  extern "C" __global__ void cache_append_sum_##N(const T* k, const T* kpool, float* sums, float* cents, float* state, const int* cu, const int* ent, const int* work, int nwork, int nstate, int C, int W, int B) { \
    cache_append_sum<T>(k, kpool, sums, cents, state, cu, ent, work, nwork, nstate, C, W, B);                                  \
  }                                                                                                                              \
  extern "C" __global__ void cache_route_##N(const T* q, const float* cents, const float* sums, const int* rows, const int* ptab, int* sel, float* plist, unsigned* cnt, int Hq, int Hkv, int D, int B, int topk, int causal, int hpc, int tps) { \
    cache_route<T>(q, cents, sums, rows, ptab, sel, plist, cnt, Hq, Hkv, D, B, topk, causal, hpc, tps);                         \
  }                                                                                                                              \
  extern "C" __global__ void __launch_bounds__(128) cache_attend_##N(const T* q, const T* kpool, const T* vpool, const int* rows, const int* ptab, const int* sel, float* part, int Hq, int Hkv, int D, int B, int topk, int causal, float scale, int vec) { \
    cache_attend<T>(q, kpool, vpool, rows, ptab, sel, part, Hq, Hkv, D, B, topk, causal, scale, vec);                           \
  }                                                                                                                              \
  extern "C" __global__ void cache_merge_##N(const float* part, const int* sel, T* out, float* lse, i64 nrh, int D, int topk, float scale) { \
    cache_merge<T>(part, sel, out, lse, nrh, D, topk, scale);                                                                   \
  }
MOBA_DTYPES(CACHE_ENTRIES)

// ------------------------------------------------------------------------------------- bench probe
// read_probe: the decode bench's read bandwidth (timeDeviceRead). Streams n uint4 words grid-strided, four
// independent 16-byte loads in flight per thread, adds them up and writes one word per CTA into sink, so the
// loads cannot be dropped. The WebGPU backend runs the same probe in WGSL (read-probe.wgsl.ts).
extern "C" __global__ void __launch_bounds__(256) read_probe(const uint4* src, i64 n, unsigned* sink) {
  __shared__ unsigned wsum[8];
  const i64 s = (i64)gridDim.x * blockDim.x;
  i64 i = blockIdx.x * (i64)blockDim.x + threadIdx.x;
  unsigned acc = 0u;
  for (; i + 3 * s < n; i += 4 * s) {
    const uint4 a = __ldcs(src + i), b = __ldcs(src + i + s), c = __ldcs(src + i + 2 * s), d = __ldcs(src + i + 3 * s);
    acc += (a.x ^ b.y) + (a.y ^ b.z) + (a.z ^ b.w) + (a.w ^ b.x) + (c.x ^ d.y) + (c.y ^ d.z) + (c.z ^ d.w) + (c.w ^ d.x);
  }
  for (; i < n; i += s) {
    const uint4 a = __ldcs(src + i);
    acc += a.x + a.y + a.z + a.w;
  }
  for (int o = 16; o > 0; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
  if ((threadIdx.x & 31) == 0) wsum[threadIdx.x >> 5] = acc;
  __syncthreads();
  if (threadIdx.x == 0) {
    unsigned t = 0u;
    for (int w = 0; w < (int)(blockDim.x >> 5); ++w) t += wsum[w];
    sink[blockIdx.x] = t;
  }
}
