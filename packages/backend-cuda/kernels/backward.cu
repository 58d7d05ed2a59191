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

// ---------------------------------------------------------------------------------------------------
// Tensor-core backward (f16/bf16, D = 64 or 128). P and dS are recomputed from lse and Δ, rounded to 16
// bits only as mma operands (as in FlashAttention); all sums are f32. Deterministic: no float atomics.
//  dq_tc:   query-major like forward_tc (window.cuh): per key block, gathered chunks of 64 window rows;
//           a warp owns 16 rows: S = Q·Kᵀ, dP = dO·Vᵀ, P = exp2(S·scale·log2e − lse·log2e),
//           dS = P ∘ (dP − Δ), dQ += dS·K. The f32 dQ rows live in `acc` (this CTA's rows only).
//  dkdv_tc: one CTA per (64-key tile of a key block, kv head); a warp owns 16 keys and walks the block's
//           collected query lists of every query head of the group, 32 rows at a time:
//           Sᵀ = K·Qᵀ, dPᵀ = V·dOᵀ, dV += Pᵀ·dO, dK += dSᵀ·Q; written once, dK scaled.
#include "mma.cuh"
#include "window.cuh"

constexpr int TC_WARPS = 4;
constexpr int CH = TC_WARPS * 16;  // dq: gathered rows per chunk
constexpr int RC = 32;             // dkdv: gathered rows per chunk
constexpr int KV_TILE = TC_WARPS * 16;

#ifndef MOBA_NO_HALF
template <typename T, int D, int KT>
struct DqSmem {
  T *q, *dout, *k, *v;
  float *lse2, *dl;  // per chunk row: lse·log2e, Δ
  int* row;
  WindowLists L;
  __device__ DqSmem(char* p) {
    q = (T*)p; p += CH * (D + PAD) * sizeof(T);
    dout = (T*)p; p += CH * (D + PAD) * sizeof(T);
    k = (T*)p; p += KT * (D + PAD) * sizeof(T);
    v = (T*)p; p += KT * (D + PAD) * sizeof(T);
    L.rows = (unsigned short*)p; p += LIST_CAP * sizeof(unsigned short);
    lse2 = (float*)p; p += CH * sizeof(float);
    dl = (float*)p; p += CH * sizeof(float);
    row = (int*)p; p += CH * sizeof(int);
    L.cursor = (int*)p; p += NBR * sizeof(int);
    L.start = (int*)p;
  }
};

// One warp, one KT-key tile: dQ of its 16 rows += dS·K.
template <typename T, int D, int KT>
__device__ __forceinline__ void dq_tile(const DqSmem<T, D, KT>& sm, float (*dq)[4], const int* trow, const float* lse2, const float* dl,
                                        int kt0, int kend, int causal, float sl2) {
  const int lane = threadIdx.x % WARP, warp = threadIdx.x / WARP, cq = lane % 4;
  constexpr int LD = D + PAD;
  float s[KT / 8][4], dp[KT / 8][4];
#pragma unroll
  for (int n = 0; n < KT / 8; ++n)
#pragma unroll
    for (int e = 0; e < 4; ++e) s[n][e] = dp[n][e] = 0.f;
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) {  // S = Q·Kᵀ, dP = dO·Vᵀ
    unsigned a[4], ad[4];
    frag_a(a, sm.q, LD, warp * 16, kk * 16);
    frag_a(ad, sm.dout, LD, warp * 16, kk * 16);
#pragma unroll
    for (int np = 0; np < KT / 16; ++np) {
      unsigned b[4];
      frag_b_nk(b, sm.k, LD, np * 16, kk * 16);
      mma(T(), s[2 * np], a, b);
      mma(T(), s[2 * np + 1], a, b + 2);
      frag_b_nk(b, sm.v, LD, np * 16, kk * 16);
      mma(T(), dp[2 * np], ad, b);
      mma(T(), dp[2 * np + 1], ad, b + 2);
    }
  }
#pragma unroll
  for (int n = 0; n < KT / 8; ++n)
#pragma unroll
    for (int e = 0; e < 4; ++e) {  // dS (kept in s)
      const int key = kt0 + n * 8 + 2 * cq + (e & 1), t = trow[e / 2];
      const bool ok = t >= 0 && key < kend && (!causal || key <= t);
      const float p = exp2f(s[n][e] * sl2 - lse2[e / 2]);
      s[n][e] = ok ? p * (dp[n][e] - dl[e / 2]) : 0.f;
    }
#pragma unroll
  for (int kk = 0; kk < KT / 16; ++kk) {  // dQ += dS·K
    unsigned a[4];
    a[0] = pack2(T(), s[2 * kk][0], s[2 * kk][1]);
    a[1] = pack2(T(), s[2 * kk][2], s[2 * kk][3]);
    a[2] = pack2(T(), s[2 * kk + 1][0], s[2 * kk + 1][1]);
    a[3] = pack2(T(), s[2 * kk + 1][2], s[2 * kk + 1][3]);
#pragma unroll
    for (int np = 0; np < D / 16; ++np) {
      unsigned b[4];
      frag_b_kn(b, sm.k, LD, kk * 16, np * 16);
      mma(T(), dq[2 * np], a, b);
      mma(T(), dq[2 * np + 1], a, b + 2);
    }
  }
}

template <typename T, int D, int KT>
__device__ void dq_chunk(const DqSmem<T, D, KT>& sm, const T* q, const T* k, const T* v, const T* dout, const float* lse, const float* dlt,
                         float* acc, const Window& w, const unsigned short* lrows, int n, int p0, int p1, int Hq, int h, int Hkv, int kvh,
                         int causal, float sl2) {
  const int lane = threadIdx.x % WARP, warp = threadIdx.x / WARP, g = lane / 4, cq = lane % 4;
  __syncthreads();  // the previous chunk is done with row ids, Q, dO, K and V
  if (threadIdx.x < CH) {
    const int lr = threadIdx.x < n ? (int)lrows[threadIdx.x] : -1;
    sm.row[threadIdx.x] = lr;
    const i64 rw = (i64)(w.w0 + lr) * Hq + h;
    sm.lse2[threadIdx.x] = lr >= 0 ? lse[rw] * LOG2E : INFINITY;
    sm.dl[threadIdx.x] = lr >= 0 ? dlt[rw] : 0.f;
  }
  __syncthreads();
  stage_rows<D>(sm.q, CH, n, q, [&](int r) { return ((i64)(w.w0 + sm.row[r]) * Hq + h) * D; });
  stage_rows<D>(sm.dout, CH, n, dout, [&](int r) { return ((i64)(w.w0 + sm.row[r]) * Hq + h) * D; });
  int trow[2];
  float dq[D / 8][4], l2[2], dl[2];
  for (int r = 0; r < 2; ++r) {
    const int cr = warp * 16 + g + 8 * r, lr = sm.row[cr];
    trow[r] = lr >= 0 ? w.w0 + lr : -1;
    l2[r] = sm.lse2[cr];
    dl[r] = sm.dl[cr];
#pragma unroll
    for (int nn = 0; nn < D / 8; ++nn) {
      float2 x = make_float2(0.f, 0.f);
      if (lr >= 0) x = *reinterpret_cast<const float2*>(acc + ((i64)trow[r] * Hq + h) * D + nn * 8 + 2 * cq);
      dq[nn][2 * r] = x.x;
      dq[nn][2 * r + 1] = x.y;
    }
  }
  for (int kt0 = p0; kt0 < p1; kt0 += KT) {
    const int nk = min(KT, p1 - kt0);
    __syncthreads();  // Q, dO staged; the previous tile's K, V are no longer read
    stage_rows<D>(sm.k, KT, nk, k, [&](int r) { return ((i64)(kt0 + r) * Hkv + kvh) * D; });
    stage_rows<D>(sm.v, KT, nk, v, [&](int r) { return ((i64)(kt0 + r) * Hkv + kvh) * D; });
    __syncthreads();
    dq_tile<T, D, KT>(sm, dq, trow, l2, dl, kt0, p1, causal, sl2);
  }
  for (int r = 0; r < 2; ++r) {
    if (trow[r] < 0) continue;
#pragma unroll
    for (int nn = 0; nn < D / 8; ++nn)
      *reinterpret_cast<float2*>(acc + ((i64)trow[r] * Hq + h) * D + nn * 8 + 2 * cq) = make_float2(dq[nn][2 * r], dq[nn][2 * r + 1]);
  }
}

template <typename T, int D, int KT>
__device__ void dq_tc(const T* q, const T* k, const T* v, const T* dout, const float* lse, const float* dlt, const int* indices, T* dqo,
                      float* acc, const int* cu, const int* win_base, int nseq, int Hq, int Hkv, int B, int topk, int causal, float scale,
                      int BQ) {
  extern __shared__ __align__(16) char smem_raw[];
  const DqSmem<T, D, KT> sm(smem_raw);
  const Window w = window_of(cu, win_base, nseq, BQ);
  const int h = blockIdx.y, kvh = h / (Hq / Hkv);
  const float sl2 = scale * LOG2E;
  for (int i = threadIdx.x; i < w.nrows * (D / 4); i += blockDim.x) {
    const int r = i / (D / 4), c = (i - r * (D / 4)) * 4;
    *reinterpret_cast<float4*>(acc + ((i64)(w.w0 + r) * Hq + h) * D + c) = make_float4(0.f, 0.f, 0.f, 0.f);
  }
  const int nb = window_blocks(w, B, causal);
  for (int j0 = 0; j0 < nb; j0 += NBR) {
    build_lists(sm.L, indices, w, Hq, h, topk, j0);
    for (int jj = 0; jj < NBR && j0 + jj < nb; ++jj) {
      const int b0 = sm.L.start[jj], cnt = sm.L.start[jj + 1] - b0;
      if (cnt == 0) continue;  // uniform
      const int p0 = w.s0 + (j0 + jj) * B, p1 = min(p0 + B, w.s1);
      for (int c0 = 0; c0 < cnt; c0 += CH)
        dq_chunk<T, D, KT>(sm, q, k, v, dout, lse, dlt, acc, w, sm.L.rows + b0 + c0, min(CH, cnt - c0), p0, p1, Hq, h, Hkv, kvh, causal, sl2);
    }
  }
  __syncthreads();
  for (int i = threadIdx.x; i < w.nrows * (D / 4); i += blockDim.x) {
    const int r = i / (D / 4), c = (i - r * (D / 4)) * 4;
    const i64 o = ((i64)(w.w0 + r) * Hq + h) * D + c;
    const float4 x = *reinterpret_cast<const float4*>(acc + o);
    st(dqo, o, x.x * scale); st(dqo, o + 1, x.y * scale); st(dqo, o + 2, x.z * scale); st(dqo, o + 3, x.w * scale);
  }
}

template <typename T, int D>
struct DkdvSmem {
  T *k, *v, *q, *dout;
  float *lse2, *dl;
  int* tok;  // chunk row -> token (-1: padding)
  __device__ DkdvSmem(char* p) {
    k = (T*)p; p += KV_TILE * (D + PAD) * sizeof(T);
    v = (T*)p; p += KV_TILE * (D + PAD) * sizeof(T);
    q = (T*)p; p += RC * (D + PAD) * sizeof(T);
    dout = (T*)p; p += RC * (D + PAD) * sizeof(T);
    lse2 = (float*)p; p += RC * sizeof(float);
    dl = (float*)p; p += RC * sizeof(float);
    tok = (int*)p;
  }
};

// One warp, one chunk of RC query rows: dV, dK of its 16 keys (rows g, g + 8 of the warp's key slice).
template <typename T, int D>
__device__ __forceinline__ void dkdv_rows(const DkdvSmem<T, D>& sm, float (*dk)[4], float (*dv)[4], const int* key, int kend, int causal,
                                          float sl2) {
  const int lane = threadIdx.x % WARP, warp = threadIdx.x / WARP, cq = lane % 4;
  constexpr int LD = D + PAD;
  float s[RC / 8][4], dp[RC / 8][4];
#pragma unroll
  for (int n = 0; n < RC / 8; ++n)
#pragma unroll
    for (int e = 0; e < 4; ++e) s[n][e] = dp[n][e] = 0.f;
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) {  // Sᵀ = K·Qᵀ, dPᵀ = V·dOᵀ
    unsigned a[4], av[4];
    frag_a(a, sm.k, LD, warp * 16, kk * 16);
    frag_a(av, sm.v, LD, warp * 16, kk * 16);
#pragma unroll
    for (int np = 0; np < RC / 16; ++np) {
      unsigned b[4];
      frag_b_nk(b, sm.q, LD, np * 16, kk * 16);
      mma(T(), s[2 * np], a, b);
      mma(T(), s[2 * np + 1], a, b + 2);
      frag_b_nk(b, sm.dout, LD, np * 16, kk * 16);
      mma(T(), dp[2 * np], av, b);
      mma(T(), dp[2 * np + 1], av, b + 2);
    }
  }
#pragma unroll
  for (int n = 0; n < RC / 8; ++n)
#pragma unroll
    for (int e = 0; e < 4; ++e) {  // P (in s) and dS (in dp); columns are query rows
      const int c = n * 8 + 2 * cq + (e & 1), t = sm.tok[c], kp = key[e / 2];
      const bool ok = t >= 0 && kp < kend && (!causal || kp <= t);
      const float p = ok ? exp2f(s[n][e] * sl2 - sm.lse2[c]) : 0.f;
      dp[n][e] = ok ? p * (dp[n][e] - sm.dl[c]) : 0.f;
      s[n][e] = p;
    }
#pragma unroll
  for (int kk = 0; kk < RC / 16; ++kk) {  // dV += Pᵀ·dO, dK += dSᵀ·Q
    unsigned a[4], ad[4];
    a[0] = pack2(T(), s[2 * kk][0], s[2 * kk][1]);
    a[1] = pack2(T(), s[2 * kk][2], s[2 * kk][3]);
    a[2] = pack2(T(), s[2 * kk + 1][0], s[2 * kk + 1][1]);
    a[3] = pack2(T(), s[2 * kk + 1][2], s[2 * kk + 1][3]);
    ad[0] = pack2(T(), dp[2 * kk][0], dp[2 * kk][1]);
    ad[1] = pack2(T(), dp[2 * kk][2], dp[2 * kk][3]);
    ad[2] = pack2(T(), dp[2 * kk + 1][0], dp[2 * kk + 1][1]);
    ad[3] = pack2(T(), dp[2 * kk + 1][2], dp[2 * kk + 1][3]);
#pragma unroll
    for (int np = 0; np < D / 16; ++np) {
      unsigned b[4];
      frag_b_kn(b, sm.dout, LD, kk * 16, np * 16);
      mma(T(), dv[2 * np], a, b);
      mma(T(), dv[2 * np + 1], a, b + 2);
      frag_b_kn(b, sm.q, LD, kk * 16, np * 16);
      mma(T(), dk[2 * np], ad, b);
      mma(T(), dk[2 * np + 1], ad, b + 2);
    }
  }
}

// Stages chunk rows [c0, c0 + n) of a collected list: tokens, lse·log2e, Δ, then Q (zero for a NaN row,
// so its 0-weighted pairs cannot spread NaN to keys it does not attend) and dO.
template <typename T, int D>
__device__ void dkdv_stage(const DkdvSmem<T, D>& sm, const T* q, const T* dout, const float* lse, const float* dlt, const int* list, int n,
                           int Hq, int h) {
  __syncthreads();  // the previous chunk is no longer read
  if (threadIdx.x < RC) {
    const int t = threadIdx.x < n ? list[threadIdx.x] : -1;
    const i64 rw = (i64)t * Hq + h;
    sm.tok[threadIdx.x] = t;
    sm.lse2[threadIdx.x] = t >= 0 ? lse[rw] * LOG2E : INFINITY;
    sm.dl[threadIdx.x] = t >= 0 ? dlt[rw] : 0.f;
  }
  __syncthreads();
  constexpr int V = D / 8;
  for (int i = threadIdx.x; i < RC * V; i += blockDim.x) {
    const int r = i / V, c = (i - r * V) * 8;
    uint4 x = make_uint4(0u, 0u, 0u, 0u), y = x;
    if (r < n) {
      const i64 o = ((i64)sm.tok[r] * Hq + h) * D + c;
      if (sm.lse2[r] == sm.lse2[r]) x = *reinterpret_cast<const uint4*>(q + o);
      y = *reinterpret_cast<const uint4*>(dout + o);
    }
    *reinterpret_cast<uint4*>(sm.q + r * (D + PAD) + c) = x;
    *reinterpret_cast<uint4*>(sm.dout + r * (D + PAD) + c) = y;
  }
  __syncthreads();
}

template <typename T, int D>
__device__ void dkdv_tc(const T* q, const T* k, const T* v, const T* dout, const float* lse, const float* dlt, const int* offsets,
                        const int* rows, T* dko, T* dvo, const int* cu, const int* block_base, int nseq, int Hq, int Hkv, int B, int NB,
                        int causal, float scale, int nsub) {
  extern __shared__ __align__(16) char smem_raw[];
  const DkdvSmem<T, D> sm(smem_raw);
  const int lane = threadIdx.x % WARP, warp = threadIdx.x / WARP, g = lane / 4, cq = lane % 4;
  const int kvh = blockIdx.y, G = Hq / Hkv;
  const int gb = blockIdx.x / nsub, sub = blockIdx.x - gb * nsub, s = upper_index(block_base, nseq, gb);
  const int bstart = cu[s] + (gb - block_base[s]) * B, bend = min(bstart + B, cu[s + 1]);
  const int k0 = bstart + sub * KV_TILE, k1 = min(k0 + KV_TILE, bend);
  if (k0 >= k1) return;  // past the end of a partial block (uniform)
  stage_rows<D>(sm.k, KV_TILE, k1 - k0, k, [&](int r) { return ((i64)(k0 + r) * Hkv + kvh) * D; });
  stage_rows<D>(sm.v, KV_TILE, k1 - k0, v, [&](int r) { return ((i64)(k0 + r) * Hkv + kvh) * D; });
  const int key[2] = {k0 + warp * 16 + g, k0 + warp * 16 + g + 8};
  float dk[D / 8][4], dv[D / 8][4];
#pragma unroll
  for (int n = 0; n < D / 8; ++n)
#pragma unroll
    for (int e = 0; e < 4; ++e) dk[n][e] = dv[n][e] = 0.f;
  const float sl2 = scale * LOG2E;
  for (int h = kvh * G; h < (kvh + 1) * G; ++h) {
    const int lb = offsets[(i64)h * NB + gb], le = offsets[(i64)h * NB + gb + 1];
    for (int c0 = lb; c0 < le; c0 += RC) {
      dkdv_stage<T, D>(sm, q, dout, lse, dlt, rows + c0, min(RC, le - c0), Hq, h);
      dkdv_rows<T, D>(sm, dk, dv, key, k1, causal, sl2);
    }
  }
  for (int r = 0; r < 2; ++r) {
    if (key[r] >= k1) continue;
    const i64 o = ((i64)key[r] * Hkv + kvh) * D + 2 * cq;
#pragma unroll
    for (int n = 0; n < D / 8; ++n) {
      *reinterpret_cast<unsigned*>(dko + o + n * 8) = pack2(T(), dk[n][2 * r] * scale, dk[n][2 * r + 1] * scale);
      *reinterpret_cast<unsigned*>(dvo + o + n * 8) = pack2(T(), dv[n][2 * r], dv[n][2 * r + 1]);
    }
  }
}

#define BACKWARD_TC_ENTRIES(N, T, D)                                                                                         \
  extern "C" __global__ void __launch_bounds__(TC_WARPS * WARP) dq_tc_d##D##_##N(                                            \
      const T* q, const T* k, const T* v, const T* dout, const float* lse, const float* dlt, const int* indices, T* dqo,     \
      float* acc, const int* cu, const int* win_base, int nseq, int Hq, int Hkv, int B, int topk, int causal, float scale,   \
      int BQ) {                                                                                                              \
    dq_tc<T, D, 32>(q, k, v, dout, lse, dlt, indices, dqo, acc, cu, win_base, nseq, Hq, Hkv, B, topk, causal, scale, BQ);    \
  }                                                                                                                          \
  extern "C" __global__ void __launch_bounds__(TC_WARPS * WARP) dkdv_tc_d##D##_##N(                                          \
      const T* q, const T* k, const T* v, const T* dout, const float* lse, const float* dlt, const int* offsets,             \
      const int* rows, T* dko, T* dvo, const int* cu, const int* block_base, int nseq, int Hq, int Hkv, int B, int NB,       \
      int causal, float scale, int nsub) {                                                                                   \
    dkdv_tc<T, D>(q, k, v, dout, lse, dlt, offsets, rows, dko, dvo, cu, block_base, nseq, Hq, Hkv, B, NB, causal, scale,     \
                  nsub);                                                                                                     \
  }
BACKWARD_TC_ENTRIES(f16, __half, 64)
BACKWARD_TC_ENTRIES(f16, __half, 128)
BACKWARD_TC_ENTRIES(bf16, __nv_bfloat16, 64)
BACKWARD_TC_ENTRIES(bf16, __nv_bfloat16, 128)
#endif
