// Backward (SPEC §5), deterministic, no float atomics:
//  delta: Δ[t,h] = Σ_d dOut·out, one warp per row.
//  dkdv:  one CTA per (kv head, global key block, chunk of `kc` keys). K and V of the chunk sit in shared
//         memory; the CTA walks the block's collected query lists of every query head of the group in
//         order, 4 rows at a time (one per warp): lane j computes P and dS of key j for the warp's row,
//         then every thread adds the 4 rows' contributions to its fixed set of dK/dV accumulators
//         (registers). Each key is owned by exactly one CTA, so dk/dv are written once, already summed
//         over the group's query heads.
//  dq:    one warp per (row, head), query-major like the forward: walks the row's selected blocks.
// P = exp(scale·s − lse) is recomputed from the forward's lse (never stored); causal: key p <= t.
#include "common.cuh"
using namespace moba;

constexpr int BWD_WARPS = 4;
constexpr int MAX_DPL = 8;    // dims per lane in dq: D <= 256
constexpr int MAX_EPT = 32;   // dK/dV accumulator elements per thread: kc * D <= 4096

template <typename T>
__device__ void delta(const T* out, const T* dout, float* dlt, i64 nrows, int D) {
  const int lane = threadIdx.x % WARP;
  for (i64 row = (i64)blockIdx.x * BWD_WARPS + threadIdx.x / WARP; row < nrows; row += (i64)gridDim.x * BWD_WARPS) {
    float s = 0.f;
    for (int d = lane; d < D; d += WARP) s += ld(out, row * D + d) * ld(dout, row * D + d);
    s = warp_sum(s);
    if (lane == 0) dlt[row] = s;
  }
}

template <typename T>
__device__ void dkdv(const T* q, const T* k, const T* v, const T* dout, const float* lse, const float* dlt, const int* offsets,
                     const int* rows, T* dk, T* dv, const int* cu, const int* block_base, int nseq, int Hq, int Hkv, int D, int B,
                     int NB, int causal, float scale, int kc) {
  extern __shared__ float smem[];
  float* sk = smem;                        // [kc][D + 1]
  float* sv = sk + kc * (D + 1);           // [kc][D + 1]
  float* sq = sv + kc * (D + 1);           // [BWD_WARPS][D]
  float* sdo = sq + BWD_WARPS * D;         // [BWD_WARPS][D]
  float* sp = sdo + BWD_WARPS * D;         // [BWD_WARPS][kc]  P
  float* sds = sp + BWD_WARPS * kc;        // [BWD_WARPS][kc]  dS
  int* sok = (int*)(sds + BWD_WARPS * kc); // [BWD_WARPS][kc]  1 where the row attends the key
  const int lane = threadIdx.x % WARP, warp = threadIdx.x / WARP, G = Hq / Hkv, nchunk = (B + kc - 1) / kc;
  const float l2 = scale * LOG2E;
  for (i64 item = blockIdx.x; item < (i64)Hkv * NB * nchunk; item += gridDim.x) {
    const int kvh = (int)(item / ((i64)NB * nchunk)), rest = (int)(item - (i64)kvh * NB * nchunk);
    const int g = rest / nchunk, c = rest - g * nchunk, s = upper_index(block_base, nseq, g);
    const int k0 = cu[s] + (g - block_base[s]) * B + c * kc, k1 = min(min(cu[s] + (g - block_base[s] + 1) * B, cu[s + 1]), k0 + kc);
    if (k0 >= k1) continue;  // past the end of a partial last block (uniform over the CTA)
    __syncthreads();
    for (int i = threadIdx.x; i < kc * D; i += blockDim.x) {
      const int j = i / D, d = i - j * D;
      const bool ok = k0 + j < k1;
      sk[j * (D + 1) + d] = ok ? ld(k, ((i64)(k0 + j) * Hkv + kvh) * D + d) : 0.f;
      sv[j * (D + 1) + d] = ok ? ld(v, ((i64)(k0 + j) * Hkv + kvh) * D + d) : 0.f;
    }
    float adk[MAX_EPT], adv[MAX_EPT];
#pragma unroll
    for (int r = 0; r < MAX_EPT; ++r) adk[r] = adv[r] = 0.f;
    for (int h = kvh * G; h < (kvh + 1) * G; ++h) {
      const int lb = offsets[(i64)h * NB + g], le = offsets[(i64)h * NB + g + 1];
      for (int r0 = lb; r0 < le; r0 += BWD_WARPS) {
        const int nr = min(BWD_WARPS, le - r0);
        __syncthreads();  // K/V staged; the previous group's sq/sdo/sp/sds are no longer read
        if (warp < nr) {
          const int t = rows[r0 + warp];
          const i64 qo = ((i64)t * Hq + h) * D;
          for (int d = lane; d < D; d += WARP) { sq[warp * D + d] = ld(q, qo + d); sdo[warp * D + d] = ld(dout, qo + d); }
          __syncwarp();
          const float L = lse[(i64)t * Hq + h], dl = dlt[(i64)t * Hq + h];
          for (int j = lane; j < kc; j += WARP) {
            float x = 0.f, dp = 0.f;
            for (int d = 0; d < D; ++d) { x += sq[warp * D + d] * sk[j * (D + 1) + d]; dp += sdo[warp * D + d] * sv[j * (D + 1) + d]; }
            const bool ok = k0 + j < k1 && (!causal || k0 + j <= t) && L != -INFINITY;
            const float p = exp2f(x * l2 - L * LOG2E);
            sp[warp * kc + j] = p;
            sds[warp * kc + j] = p * (dp - dl);
            sok[warp * kc + j] = ok;  // pairs not attended add nothing (not even 0 · NaN)
          }
        }
        __syncthreads();
#pragma unroll
        for (int r = 0; r < MAX_EPT; ++r) {
          const int e = threadIdx.x + r * (BWD_WARPS * WARP), j = e / D, d = e - j * D;
          if (e < kc * D)
            for (int w = 0; w < nr; ++w)
              if (sok[w * kc + j]) { adv[r] += sp[w * kc + j] * sdo[w * D + d]; adk[r] += sds[w * kc + j] * sq[w * D + d]; }
        }
      }
    }
#pragma unroll
    for (int r = 0; r < MAX_EPT; ++r) {
      const int e = threadIdx.x + r * (BWD_WARPS * WARP), j = e / D, d = e - j * D;
      if (e < kc * D && k0 + j < k1) {
        st(dk, ((i64)(k0 + j) * Hkv + kvh) * D + d, adk[r] * scale);
        st(dv, ((i64)(k0 + j) * Hkv + kvh) * D + d, adv[r]);
      }
    }
  }
}

template <typename T>
__device__ void dq(const T* q, const T* k, const T* v, const T* dout, const float* lse, const float* dlt, const int* indices, T* dqo,
                   const int* cu, int nseq, int T_, int Hq, int Hkv, int D, int B, int topk, int causal, float scale) {
  extern __shared__ float smem[];  // [BWD_WARPS][2][D]: q (scaled to log2 units), dOut
  const int lane = threadIdx.x % WARP, warp = threadIdx.x / WARP;
  float* sq = smem + warp * 2 * D;
  float* sdo = sq + D;
  for (i64 row = (i64)blockIdx.x * BWD_WARPS + warp; row < (i64)T_ * Hq; row += (i64)gridDim.x * BWD_WARPS) {
    const int h = (int)(row / T_), t = (int)(row - (i64)h * T_), kvh = h / (Hq / Hkv);
    const int s = upper_index(cu, nseq, t), s0 = cu[s], s1 = cu[s + 1], cb = (t - s0) / B;
    const i64 qo = ((i64)t * Hq + h) * D;
    __syncwarp();
    for (int d = lane; d < D; d += WARP) { sq[d] = ld(q, qo + d) * scale * LOG2E; sdo[d] = ld(dout, qo + d); }
    __syncwarp();
    const float L2 = lse[(i64)t * Hq + h] * LOG2E, dl = dlt[(i64)t * Hq + h];
    float acc[MAX_DPL];
    for (int r = 0; r < MAX_DPL; ++r) acc[r] = 0.f;
    const int* sel = indices + ((i64)t * Hq + h) * topk;
    for (int i = 0; i < topk && sel[i] >= 0 && L2 != -INFINITY; ++i) {
      const int j = sel[i], p0 = s0 + j * B, p1 = (causal && j == cb) ? t + 1 : min(p0 + B, s1);
      for (int pc = p0; pc < p1; pc += WARP) {
        const int n = min(WARP, p1 - pc);
        float ds = 0.f;
        if (lane < n) {
          const i64 ko = ((i64)(pc + lane) * Hkv + kvh) * D;
          float x = 0.f, dp = 0.f;
          for (int d = 0; d < D; ++d) { x += sq[d] * ld(k, ko + d); dp += sdo[d] * ld(v, ko + d); }
          const float p = exp2f(x - L2);
          ds = p * (dp - dl);
        }
        for (int jj = 0; jj < n; ++jj) {
          const float dsj = __shfl_sync(0xffffffffu, ds, jj);
          const i64 ko = ((i64)(pc + jj) * Hkv + kvh) * D;
          for (int r = 0; r < MAX_DPL; ++r) if (lane + r * WARP < D) acc[r] += dsj * ld(k, ko + lane + r * WARP);
        }
      }
    }
    for (int r = 0; r < MAX_DPL; ++r) if (lane + r * WARP < D) st(dqo, qo + lane + r * WARP, acc[r] * scale);
  }
}

#define BACKWARD_ENTRIES(N, T)                                                                                         \
  extern "C" __global__ void __launch_bounds__(BWD_WARPS * WARP) delta_##N(const T* out, const T* dout, float* dlt,   \
                                                                          i64 nrows, int D) {                          \
    delta<T>(out, dout, dlt, nrows, D);                                                                                \
  }                                                                                                                    \
  extern "C" __global__ void __launch_bounds__(BWD_WARPS * WARP) dkdv_##N(                                             \
      const T* q, const T* k, const T* v, const T* dout, const float* lse, const float* dlt, const int* offsets,        \
      const int* rows, T* dk, T* dv, const int* cu, const int* block_base, int nseq, int Hq, int Hkv, int D, int B,    \
      int NB, int causal, float scale, int kc) {                                                                       \
    dkdv<T>(q, k, v, dout, lse, dlt, offsets, rows, dk, dv, cu, block_base, nseq, Hq, Hkv, D, B, NB, causal, scale, kc); \
  }                                                                                                                    \
  extern "C" __global__ void __launch_bounds__(BWD_WARPS * WARP) dq_##N(                                               \
      const T* q, const T* k, const T* v, const T* dout, const float* lse, const float* dlt, const int* indices,       \
      T* dqo, const int* cu, int nseq, int T_, int Hq, int Hkv, int D, int B, int topk, int causal, float scale) {     \
    dq<T>(q, k, v, dout, lse, dlt, indices, dqo, cu, nseq, T_, Hq, Hkv, D, B, topk, causal, scale);                    \
  }
MOBA_DTYPES(BACKWARD_ENTRIES)
