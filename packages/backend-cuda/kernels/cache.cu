// Paged KV cache (SPEC §9). A page holds B tokens of one sequence: keys (after kconv) and values [B, C]
// in the storage dtype (C = Hkv·D), its f32 key sum [C] and, once full, its f32 centroid [C] = sum / B.
// Per sequence slot: the last W−1 raw keys [W−1, C] f32 (the kconv state across appends).
//   append: cache_append_kv (k' and v into the pages, one thread per (new row, channel)), then
//           cache_append_sum (each touched page's sum in token order, its centroid when full, the new state).
//   attend: cache_route (top-k per query head over the page centroids, split over CTAs), cache_attend (one CTA per
//           (query row, head, selected slot): a flash-decoding partial m, l, acc in f32; the last CTA of a
//           (row, head) merges its partials in slot order → out, lse). No float atomics: every sum has a fixed order.
//           Short sequences (cache-fused.cuh): cache_fused, one launch that routes in every CTA, then attends and merges.
#include "common.cuh"
#include "cache-route.cuh"
#include "cache-attend.cuh"
#include "cache-fused.cuh"
using namespace moba;

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
  extern "C" __global__ void __launch_bounds__(CA_THREADS) cache_attend_##N(const T* q, const T* kpool, const T* vpool, const int* rows, const int* ptab, const int* sel, float* part, unsigned* cnt, T* out, float* lse, int Hq, int Hkv, int D, int B, int topk, int causal, float scale, int vec, int sb, int nsub) { \
    cache_attend<T>(q, kpool, vpool, rows, ptab, sel, part, cnt, out, lse, Hq, Hkv, D, B, topk, causal, scale, vec, sb, nsub);  \
  }                                                                                                                              \
  extern "C" __global__ void __launch_bounds__(CA_THREADS) cache_fused_##N(const T* q, const float* cents, const float* sums, const T* kpool, const T* vpool, const int* rows, const int* ptab, float* part, unsigned* cnt, T* out, float* lse, int Hq, int Hkv, int D, int B, int topk, int causal, float scale, int vec, int sb, int nsub, int wph) { \
    cache_fused<T>(q, cents, sums, kpool, vpool, rows, ptab, part, cnt, out, lse, Hq, Hkv, D, B, topk, causal, scale, vec, sb, nsub, wph); \
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
