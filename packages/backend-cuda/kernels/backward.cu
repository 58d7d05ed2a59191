// Backward (SPEC §5), deterministic, no float atomics:
//  delta: Δ[t,h] = Σ_d dOut·out, one warp per row.
//  dkdv:  one CTA per (kv head, global key block, tile of `kc` keys). K and V of the tile sit in shared
//         memory; the CTA walks the block's collected query lists of every query head of the group in
//         order, 4 rows at a time (one per warp): lane j computes P and dS of key j for the warp's row,
//         then every thread adds the 4 rows' contributions to its fixed set of dK/dV accumulators
//         (registers). Each key is owned by exactly one CTA, so dk/dv are written once, already summed
//         over the group's query heads.
//  dq:    one warp per (row, head), query-major like the forward: walks the row's selected blocks.
// P = exp(scale·s − lse) is recomputed from the forward's lse (never stored); causal: key p <= t. Query rows
// follow `cuq`, keys `cu` (the same pointer for self-attention): query row t of sequence s sits at key row
// t + cu[s + 1] - cuq[s + 1] (SPEC §8); dk/dv cover every key (0 where no row attends).
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
                     const int* rows, T* dk, T* dv, const int* cuq, const int* cu, const int* block_base, int nseq, int Hq, int Hkv,
                     int D, int B, int NB, int causal, float scale, int kc) {
  extern __shared__ float smem[];
  float* sk = smem;                        // [kc][D + 1]
  float* sv = sk + kc * (D + 1);           // [kc][D + 1]
  float* sq = sv + kc * (D + 1);           // [BWD_WARPS][D]
  float* sdo = sq + BWD_WARPS * D;         // [BWD_WARPS][D]
  float* sp = sdo + BWD_WARPS * D;         // [BWD_WARPS][kc]  P
  float* sds = sp + BWD_WARPS * kc;        // [BWD_WARPS][kc]  dS
  int* sok = (int*)(sds + BWD_WARPS * kc); // [BWD_WARPS][kc]  1 where the row attends the key
  const int lane = threadIdx.x % WARP, warp = threadIdx.x / WARP, G = Hq / Hkv, nchunk = (B + kc - 1) / kc;
  for (i64 item = blockIdx.x; item < (i64)Hkv * NB * nchunk; item += gridDim.x) {
    const int kvh = (int)(item / ((i64)NB * nchunk)), rest = (int)(item - (i64)kvh * NB * nchunk);
    const int g = rest / nchunk, c = rest - g * nchunk, s = upper_index(block_base, nseq, g);
    const int k0 = cu[s] + (g - block_base[s]) * B + c * kc, k1 = min(min(cu[s] + (g - block_base[s] + 1) * B, cu[s + 1]), k0 + kc);
    const int shift = cu[s + 1] - cuq[s + 1];  // query row t sits at key row t + shift
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
            const bool ok = k0 + j < k1 && (!causal || k0 + j <= t + shift) && L != -INFINITY;
            const float p = exp2f((x * scale - L) * LOG2E);  // not x · scale·log2e: inf for a scale near the f32 maximum
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
                   const int* cuq, const int* cu, int nseq, int T_, int Hq, int Hkv, int D, int B, int topk, int causal, float scale) {
  extern __shared__ float smem[];  // [BWD_WARPS][2][D]: q, dOut
  const int lane = threadIdx.x % WARP, warp = threadIdx.x / WARP;
  float* sq = smem + warp * 2 * D;
  float* sdo = sq + D;
  for (i64 row = (i64)blockIdx.x * BWD_WARPS + warp; row < (i64)T_ * Hq; row += (i64)gridDim.x * BWD_WARPS) {
    const int h = (int)(row / T_), t = (int)(row - (i64)h * T_), kvh = h / (Hq / Hkv);
    const int s = upper_index(cuq, nseq, t), s0 = cu[s], s1 = cu[s + 1], tk = t + s1 - cuq[s + 1], cb = (tk - s0) / B;
    const i64 qo = ((i64)t * Hq + h) * D;
    __syncwarp();
    for (int d = lane; d < D; d += WARP) { sq[d] = ld(q, qo + d); sdo[d] = ld(dout, qo + d); }
    __syncwarp();
    const float L2 = lse[(i64)t * Hq + h], dl = dlt[(i64)t * Hq + h];  // natural log; scores raw (any finite f32 scale)
    float acc[MAX_DPL];
    for (int r = 0; r < MAX_DPL; ++r) acc[r] = 0.f;
    const int* sel = indices + ((i64)t * Hq + h) * topk;
    for (int i = 0; i < topk && sel[i] >= 0 && L2 != -INFINITY; ++i) {
      const int j = sel[i], p0 = s0 + j * B, p1 = (causal && j == cb) ? tk + 1 : min(p0 + B, s1);
      for (int pc = p0; pc < p1; pc += WARP) {
        const int n = min(WARP, p1 - pc);
        float ds = 0.f;
        if (lane < n) {
          const i64 ko = ((i64)(pc + lane) * Hkv + kvh) * D;
          float x = 0.f, dp = 0.f;
          for (int d = 0; d < D; ++d) { x += sq[d] * ld(k, ko + d); dp += sdo[d] * ld(v, ko + d); }
          const float p = exp2f((x * scale - L2) * LOG2E);
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
      const int* rows, T* dk, T* dv, const int* cuq, const int* cu, const int* block_base, int nseq, int Hq, int Hkv, \
      int D, int B, int NB, int causal, float scale, int kc) {                                                         \
    dkdv<T>(q, k, v, dout, lse, dlt, offsets, rows, dk, dv, cuq, cu, block_base, nseq, Hq, Hkv, D, B, NB, causal, scale, kc); \
  }                                                                                                                    \
  extern "C" __global__ void __launch_bounds__(BWD_WARPS * WARP) dq_##N(                                               \
      const T* q, const T* k, const T* v, const T* dout, const float* lse, const float* dlt, const int* indices,       \
      T* dqo, const int* cuq, const int* cu, int nseq, int T_, int Hq, int Hkv, int D, int B, int topk, int causal,    \
      float scale) {                                                                                                   \
    dq<T>(q, k, v, dout, lse, dlt, indices, dqo, cuq, cu, nseq, T_, Hq, Hkv, D, B, topk, causal, scale);               \
  }
MOBA_DTYPES(BACKWARD_ENTRIES)

// ---------------------------------------------------------------------------------------------------
// Tensor-core backward (f16/bf16, D = 64 or 128). P and dS are recomputed from lse and Δ, rounded to 16
// bits only as mma operands (as in FlashAttention); all sums are f32. Deterministic: no float atomics.
//  dkdv_tc: one CTA of NW warps per (key tile of NW·16 keys of a key block, kv head); NW = 8 (128 keys, a
//           whole block of 128) for D = 128 and B >= 128, else 4 (64 keys). A warp owns 16 keys and walks
//           the block's collected query lists of every query head of the group, 32 rows at a time (cp.async
//           double buffered, K/V loads overlapped with the first chunk): Sᵀ = K·Qᵀ, dPᵀ = V·dOᵀ,
//           dV += Pᵀ·dO, dK += dSᵀ·Q; written once, dK scaled. The same dS (through shared memory) gives
//           the chunk rows' dQ contribution of this key tile, dS·K, stored as an f32 partial per (row,
//           routing slot, key tile): K and V are read once per key block, and with whole-block tiles a
//           row has one partial per slot (half the partial traffic of 64-key tiles).
//  dq_merge: a row's partials summed in slot order, then tile order; scaled, stored once.
#include "mma.cuh"

constexpr int RC = 32;             // dkdv: gathered rows per chunk

// Per entry e of the block-major lists (rows[e] = token t of list (head h, block g), slots[e] = its routing
// slot), what dkdv_tc needs of that row, gathered once so that its chunk loop issues no dependent global
// loads: {t, slot, lse·log2e, Δ}. One CTA per list (grid-strided).
extern "C" __global__ void __launch_bounds__(256) dkdv_meta(const int* offsets, const int* rows, const int* slots, const float* lse,
                                                            const float* dlt, int Hq, int NB, int4* meta) {
  for (i64 list = blockIdx.x; list < (i64)Hq * NB; list += gridDim.x) {
    const int h = (int)(list / NB), begin = offsets[list], end = offsets[list + 1];
    for (int e = begin + threadIdx.x; e < end; e += blockDim.x) {
      const int t = rows[e];
      const i64 rw = (i64)t * Hq + h;
      meta[e] = make_int4(t, slots[e], __float_as_int(lse[rw] * LOG2E), __float_as_int(dlt[rw]));
    }
  }
}

#ifndef MOBA_NO_HALF
constexpr int DS_LD = RC + PAD;  // row stride of the dS tile [key][chunk row]

// dkdv_tc's shared memory as seen while working on chunk buffer `b` (0 or 1): K, V and the dS tile are
// shared; the chunk's Q, dO and per-row values (dkdv_meta's entries) are double-buffered so that the next
// chunk loads (cp.async) while this one is computed.
template <typename T, int D, int NW>
struct DkdvSmem {
  static constexpr int KV_TILE = NW * 16;
  static constexpr int RPT = RC * (D / 8) / (NW * WARP);  // chunk rows per thread in the Q/dO copy
  static_assert(RPT * NW * WARP == RC * (D / 8), "the Q/dO copy gives every thread the same number of rows");
  T *k, *v, *ds, *q, *dout;
  int4* meta;  // chunk row -> {token (-1: padding), routing slot (its dQ partial), lse·log2e, Δ}
  static constexpr int BUF = 2 * RC * (D + PAD) * sizeof(T) + RC * sizeof(int4);  // bytes of one chunk buffer
  __device__ DkdvSmem(char* p, int b) {
    k = (T*)p; p += KV_TILE * (D + PAD) * sizeof(T);
    v = (T*)p; p += KV_TILE * (D + PAD) * sizeof(T);
    ds = (T*)p; p += KV_TILE * DS_LD * sizeof(T);
    p += b * BUF;
    q = (T*)p; p += RC * (D + PAD) * sizeof(T);
    dout = (T*)p; p += RC * (D + PAD) * sizeof(T);
    meta = (int4*)p;
  }
};

// One warp, one chunk of RC query rows: dV, dK of its 16 keys (rows g, g + 8 of the warp's key slice).
template <typename T, int D, int NW>
__device__ __forceinline__ void dkdv_rows(const DkdvSmem<T, D, NW>& sm, float (*dk)[4], float (*dv)[4], const int* key, int kend, int causal,
                                          float sl2) {
  const int lane = threadIdx.x % WARP, warp = threadIdx.x / WARP, g = lane / 4, cq = lane % 4;
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
      const int c = n * 8 + 2 * cq + (e & 1), kp = key[e / 2];
      const int4 mt = sm.meta[c];
      const bool ok = mt.x >= 0 && kp < kend && (!causal || kp <= mt.x);
      const float p = ok ? exp2f(s[n][e] * sl2 - __int_as_float(mt.z)) : 0.f;
      dp[n][e] = ok ? p * (dp[n][e] - __int_as_float(mt.w)) : 0.f;
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
    {  // dS, rounded as the mma operand, also to shared memory for dQ (dq_partial)
      T* d = sm.ds + (warp * 16 + g) * DS_LD + kk * 16 + 2 * cq;
      *reinterpret_cast<unsigned*>(d) = ad[0];
      *reinterpret_cast<unsigned*>(d + 8 * DS_LD) = ad[1];
      *reinterpret_cast<unsigned*>(d + 8) = ad[2];
      *reinterpret_cast<unsigned*>(d + 8 * DS_LD + 8) = ad[3];
    }
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

// dQ of the chunk's RC rows from this CTA's key tile, dQ_part = dS·K (unscaled), once every warp has put
// its dS into sm.ds; warp w computes columns [w·D/NW, (w + 1)·D/NW) of all RC rows and stores them, f32,
// as the partial of (row, slot of this key block, key tile `sub`). Each partial has one writer;
// dq_merge sums them in a fixed order.
template <typename T, int D, int NW>
__device__ __forceinline__ void dq_partial(const DkdvSmem<T, D, NW>& sm, float* part, int Hs, int hl, int topk, int nsub, int sub) {
  constexpr int LD = D + PAD, NC = D / NW;  // columns per warp
  static_assert(NC % 16 == 0, "dq_partial: a warp's columns come in pairs of 8-column n-tiles");
  const int lane = threadIdx.x % WARP, warp = threadIdx.x / WARP, g = lane / 4, cq = lane % 4;
  __syncthreads();  // sm.ds is complete
  float acc[RC / 16][NC / 8][4];
#pragma unroll
  for (int m = 0; m < RC / 16; ++m)
#pragma unroll
    for (int n = 0; n < NC / 8; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[m][n][e] = 0.f;
#pragma unroll
  for (int kk = 0; kk < NW; ++kk) {  // the tile's NW·16 keys
    unsigned a[RC / 16][4];
#pragma unroll
    for (int m = 0; m < RC / 16; ++m)  // A = dSᵀ: sm.ds is [key][row], so a transposed load
      ldsm_x4_t(a[m], sm.ds + (kk * 16 + (lane / 16) * 8 + lane % 8) * DS_LD + m * 16 + ((lane / 8) % 2) * 8);
#pragma unroll
    for (int np = 0; np < NC / 16; ++np) {
      unsigned b[4];
      frag_b_kn(b, sm.k, LD, kk * 16, warp * NC + np * 16);
#pragma unroll
      for (int m = 0; m < RC / 16; ++m) {
        mma(T(), acc[m][2 * np], a[m], b);
        mma(T(), acc[m][2 * np + 1], a[m], b + 2);
      }
    }
  }
#pragma unroll
  for (int m = 0; m < RC / 16; ++m)
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int row = m * 16 + g + 8 * r, t = sm.meta[row].x;
      if (t < 0) continue;
      float* o = part + ((((i64)t * Hs + hl) * topk + sm.meta[row].y) * nsub + sub) * D + warp * NC + 2 * cq;
#pragma unroll
      for (int n = 0; n < NC / 8; ++n) *reinterpret_cast<float2*>(o + n * 8) = make_float2(acc[m][n][2 * r], acc[m][n][2 * r + 1]);
    }
}

// Starts loading chunk rows [0, n) (list entries meta[0, n)) into a chunk buffer by cp.async, one
// committed group: the entries themselves, Q (zero for a NaN row, whose lse is NaN, so that its 0-weighted
// pairs cannot spread NaN to keys it does not attend) and dO. Padding rows get token -1 by plain stores.
// `pt`/`pl`: token and lse·log2e of this thread's rows of the Q/dO copy, loaded one chunk ahead (dkdv_ahead).
// Visible after cp_async_wait and a barrier.
template <typename T, int D, int NW>
__device__ void dkdv_issue(const DkdvSmem<T, D, NW>& sm, const T* q, const T* dout, const int4* meta, int n, int Hq, int h,
                           const int* pt, const float* pl) {
  constexpr int V = D / 8, RPT = DkdvSmem<T, D, NW>::RPT;
  if (threadIdx.x < RC) {
    if ((int)threadIdx.x < n) cp_async16(sm.meta + threadIdx.x, meta + threadIdx.x, true);
    else sm.meta[threadIdx.x] = make_int4(-1, 0, __float_as_int(INFINITY), 0);
  }
#pragma unroll
  for (int u = 0; u < RPT; ++u) {
    const int i = threadIdx.x + u * NW * WARP, r = i / V, c = (i - r * V) * 8;
    const bool ok = r < n;
    const i64 o = ok ? ((i64)pt[u] * Hq + h) * D + c : 0;
    cp_async16(sm.q + r * (D + PAD) + c, q + o, ok && pl[u] == pl[u]);
    cp_async16(sm.dout + r * (D + PAD) + c, dout + o, ok);
  }
  cp_async_commit();
}

// Loads (into registers, no wait) the token and lse·log2e of this thread's Q/dO-copy rows of the chunk
// at list entries [c0, min(c0 + RC, end)); rows past the end are not read.
template <int D, int NW>
__device__ __forceinline__ void dkdv_ahead(const int4* meta, int c0, int end, int* pt, float* pl) {
  constexpr int V = D / 8, RPT = RC * V / (NW * WARP);
#pragma unroll
  for (int u = 0; u < RPT; ++u) {
    const int e = c0 + (int)(threadIdx.x + u * NW * WARP) / V;
    const int* m = reinterpret_cast<const int*>(meta + (e < end ? e : 0));
    pt[u] = e < end ? m[0] : 0;
    pl[u] = e < end ? __int_as_float(m[2]) : 0.f;
  }
}

template <typename T, int D, int NW>
__device__ void dkdv_tc(const T* q, const T* k, const T* v, const T* dout, const int4* meta, const int* offsets, T* dko, T* dvo,
                        float* part, const int* cu, const int* block_base, int nseq, int Hq, int Hkv, int B, int NB, int topk, int causal,
                        float scale, int nsub, int kv0) {
  extern __shared__ __align__(16) char smem_raw[];
  using Smem = DkdvSmem<T, D, NW>;
  constexpr int KV_TILE = Smem::KV_TILE;
  const Smem sm(smem_raw, 0);
  const int lane = threadIdx.x % WARP, warp = threadIdx.x / WARP, g = lane / 4, cq = lane % 4;
  const int kvh = kv0 + blockIdx.y, G = Hq / Hkv, Hs = gridDim.y * G;  // this launch's kv heads: [kv0, kv0 + gridDim.y)
  const int gb = blockIdx.x / nsub, sub = blockIdx.x - gb * nsub, s = upper_index(block_base, nseq, gb);
  const int bstart = cu[s] + (gb - block_base[s]) * B, bend = min(bstart + B, cu[s + 1]);
  const int k0 = bstart + sub * KV_TILE, k1 = min(k0 + KV_TILE, bend);
  if (k0 >= k1) return;  // past the end of a partial block (uniform)
  // K and V by cp.async, in the first chunk's group (complete at its cp_async_wait)
  stage_rows_async<D>(sm.k, KV_TILE, k1 - k0, k, [&](int r) { return ((i64)(k0 + r) * Hkv + kvh) * D; });
  stage_rows_async<D>(sm.v, KV_TILE, k1 - k0, v, [&](int r) { return ((i64)(k0 + r) * Hkv + kvh) * D; });
  const int key[2] = {k0 + warp * 16 + g, k0 + warp * 16 + g + 8};
  float dk[D / 8][4], dv[D / 8][4];
#pragma unroll
  for (int n = 0; n < D / 8; ++n)
#pragma unroll
    for (int e = 0; e < 4; ++e) dk[n][e] = dv[n][e] = 0.f;
  const float sl2 = scale * LOG2E;
  // the chunks: every query head of the group, its list for this block in RC-row pieces; chunk i + 1 loads
  // into the other buffer while chunk i is computed, and the tokens of chunk i + 2 load into registers
  const int hend = (kvh + 1) * G;
  constexpr int RPT = Smem::RPT;
  int h = kvh * G, c0 = offsets[(i64)h * NB + gb], le = offsets[(i64)h * NB + gb + 1];
  auto next = [&](int& hh, int& cc, int& ee) {  // first non-empty chunk at or after (hh, cc)
    while (hh < hend && cc >= ee) {
      if (++hh < hend) { cc = offsets[(i64)hh * NB + gb]; ee = offsets[(i64)hh * NB + gb + 1]; }
    }
  };
  int pt[RPT];
  float pl[RPT];
  next(h, c0, le);
  if (h < hend) {
    dkdv_ahead<D, NW>(meta, c0, le, pt, pl);
    dkdv_issue<T, D, NW>(sm, q, dout, meta + c0, min(RC, le - c0), Hq, h, pt, pl);
  }
  int hn = h, cn = c0 + RC, en = le;
  next(hn, cn, en);
  if (hn < hend) dkdv_ahead<D, NW>(meta, cn, en, pt, pl);
  for (int b = 0; h < hend; b ^= 1) {
    const Smem cur(smem_raw, b), nxt(smem_raw, b ^ 1);
    if (hn < hend) dkdv_issue<T, D, NW>(nxt, q, dout, meta + cn, min(RC, en - cn), Hq, hn, pt, pl);
    else cp_async_commit();  // an empty group keeps the count
    int h2 = hn, c2 = cn + RC, e2 = en;
    next(h2, c2, e2);
    if (h2 < hend) dkdv_ahead<D, NW>(meta, c2, e2, pt, pl);
    cp_async_wait<1>();  // this chunk's group is complete (the next one may still be in flight)
    __syncthreads();     // ... for every thread; K, V (first chunk) and the padding rows' plain stores too
    dkdv_rows<T, D, NW>(cur, dk, dv, key, k1, causal, sl2);
    dq_partial<T, D, NW>(cur, part, Hs, h - kv0 * G, topk, nsub, sub);
    __syncthreads();  // buffer b and the dS tile are no longer read
    h = hn; c0 = cn; le = en;
    hn = h2; cn = c2; en = e2;
  }
  cp_async_commit();  // K/V's group was never waited for when the block has no rows
  cp_async_wait<0>();
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

// dQ of query heads [h0, h0 + Hs) from the partials of dkdv_tc (key tiles of kvt keys, nsub per block):
// per (row, head), the sum over the routing slots in order and, within a slot, over the key tiles of that
// block in order; scaled, stored once.
template <typename T>
__device__ void dq_merge(const float* part, const int* indices, T* dqo, const int* cu, int nseq, i64 T_, int Hq, int h0, int Hs, int D,
                          int B, int topk, int nsub, int kvt, float scale) {
  const int C4 = D / 4;
  const i64 n = T_ * Hs * C4;
  for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (i64)gridDim.x * blockDim.x) {
    const int c = (int)(i % C4) * 4;
    const i64 rest = i / C4, t = rest / Hs;
    const int hl = (int)(rest - t * Hs), s = upper_index(cu, nseq, t), len = cu[s + 1] - cu[s];
    const i64 rw = t * Hq + h0 + hl;
    float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
    for (int p0 = 0; p0 < topk; p0 += 8) {  // 8 slots at a time: their loads are issued together
      int tiles[8];
      float4 x[8][2];
#pragma unroll
      for (int u = 0; u < 8; ++u) {
        const int j = p0 + u < topk ? indices[rw * topk + p0 + u] : -1;
        tiles[u] = j < 0 ? 0 : (min(B, len - j * B) + kvt - 1) / kvt;
      }
#pragma unroll
      for (int u = 0; u < 8; ++u)
#pragma unroll
        for (int sub = 0; sub < 2; ++sub)
          x[u][sub] = sub < tiles[u] ? *reinterpret_cast<const float4*>(part + (((t * Hs + hl) * topk + p0 + u) * nsub + sub) * D + c)
                                     : make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll
      for (int u = 0; u < 8; ++u)
        for (int sub = 0; sub < tiles[u]; ++sub) {  // slot order, then tile order: fixed
          const float4 y = sub < 2 ? x[u][sub] : *reinterpret_cast<const float4*>(part + (((t * Hs + hl) * topk + p0 + u) * nsub + sub) * D + c);
          acc.x += y.x; acc.y += y.y; acc.z += y.z; acc.w += y.w;
        }
    }
    const i64 o = rw * D + c;
    st(dqo, o, acc.x * scale); st(dqo, o + 1, acc.y * scale); st(dqo, o + 2, acc.z * scale); st(dqo, o + 3, acc.w * scale);
  }
}

#define DQ_MERGE_ENTRY(N, T)                                                                                          \
  extern "C" __global__ void dq_merge_##N(const float* part, const int* indices, T* dqo, const int* cu, int nseq,     \
                                           long long T_, int Hq, int h0, int Hs, int D, int B, int topk, int nsub,      \
                                           int kvt, float scale) {                                                      \
    dq_merge<T>(part, indices, dqo, cu, nseq, T_, Hq, h0, Hs, D, B, topk, nsub, kvt, scale);                          \
  }
DQ_MERGE_ENTRY(f16, __half)
DQ_MERGE_ENTRY(bf16, __nv_bfloat16)

// dkdv_tc_d{D}_{dtype}: 4 warps, 64-key tiles; dkdv_tc8_d128_{dtype}: 8 warps, 128-key tiles (D = 128).
#define BACKWARD_TC_ENTRIES(N, T, D, NW, TAG)                                                                                \
  extern "C" __global__ void __launch_bounds__(NW * WARP) dkdv_##TAG##_d##D##_##N(                                           \
      const T* q, const T* k, const T* v, const T* dout, const int4* meta, const int* offsets, T* dko, T* dvo, float* part,   \
      const int* cu, const int* block_base, int nseq, int Hq, int Hkv, int B, int NB, int topk, int causal, float scale,     \
      int nsub, int kv0) {                                                                                                   \
    dkdv_tc<T, D, NW>(q, k, v, dout, meta, offsets, dko, dvo, part, cu, block_base, nseq, Hq, Hkv, B, NB, topk, causal,     \
                      scale, nsub, kv0);                                                                                     \
  }
BACKWARD_TC_ENTRIES(f16, __half, 64, 4, tc)
BACKWARD_TC_ENTRIES(f16, __half, 128, 4, tc)
BACKWARD_TC_ENTRIES(bf16, __nv_bfloat16, 64, 4, tc)
BACKWARD_TC_ENTRIES(bf16, __nv_bfloat16, 128, 4, tc)
BACKWARD_TC_ENTRIES(f16, __half, 128, 8, tc8)
BACKWARD_TC_ENTRIES(bf16, __nv_bfloat16, 128, 8, tc8)
#endif
