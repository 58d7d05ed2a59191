// Forward (SPEC §4): one warp per (query row t, head h); 4 warps per CTA own neighbouring rows of the
// same head, so they share most selected blocks in L1/L2. The warp walks the row's selected blocks in
// tiles of 32 keys: lane j scores key j against the row (q staged in shared memory; raw scores, the max
// taken before the scale: exp2((x − m)·scale·log2 e) cannot overflow for any f32 scale), then the tile updates
// the online-softmax state (running max m, sum l) and every lane's slice of the f32 accumulator (dims lane,
// lane + 32, ...). The own block stops at key t when causal. Epilogue: out = acc / l, lse = m·scale + ln l;
// a row with no keys gives 0 and -inf. Query rows follow `cuq`, keys `cu` (the same pointer for
// self-attention): query row t of sequence s sits at key row t + cu[s + 1] - cuq[s + 1] (SPEC §8).
#include "common.cuh"
using namespace moba;

constexpr int FWD_WARPS = 4;
constexpr int MAX_DPL = 8;  // dims per lane: D <= 256

template <typename T>
__device__ void forward(const T* q, const T* k, const T* v, const int* indices, T* out, float* lse, const int* cuq, const int* cu,
                        int nseq, int T_, int Hq, int Hkv, int D, int B, int topk, int causal, float scale) {
  extern __shared__ float sq_all[];  // [FWD_WARPS][D]
  const int lane = threadIdx.x % WARP, warp = threadIdx.x / WARP;
  float* sq = sq_all + warp * D;
  const i64 nrows = (i64)T_ * Hq;
  for (i64 row = (i64)blockIdx.x * FWD_WARPS + warp; row < nrows; row += (i64)gridDim.x * FWD_WARPS) {
    const int h = (int)(row / T_), t = (int)(row - (i64)h * T_), kvh = h / (Hq / Hkv);
    const int s = upper_index(cuq, nseq, t);
    const int s0 = cu[s], s1 = cu[s + 1], tk = t + s1 - cuq[s + 1], cb = (tk - s0) / B;  // tk: the row's key position
    __syncwarp();
    for (int d = lane; d < D; d += WARP) sq[d] = ld(q, ((i64)t * Hq + h) * D + d);
    __syncwarp();
    float m = -INFINITY, l = 0.f, acc[MAX_DPL];
    bool nan_row = false;  // a non-finite score makes the whole row NaN (docs/api.md), as in the reference
    for (int r = 0; r < MAX_DPL; ++r) acc[r] = 0.f;
    const int* sel = indices + ((i64)t * Hq + h) * topk;
    for (int i = 0; i < topk; ++i) {
      const int j = sel[i];
      if (j < 0) break;
      const int p0 = s0 + j * B;
      const int p1 = (causal && j == cb) ? tk + 1 : min(p0 + B, s1);
      for (int pc = p0; pc < p1; pc += WARP) {
        const int p = pc + lane, n = min(WARP, p1 - pc);
        float x = -INFINITY;
        if (lane < n) {
          const T* kp = k + ((i64)p * Hkv + kvh) * D;
          x = 0.f;
          for (int d = 0; d < D; ++d) x += sq[d] * ld(kp, d);
        }
        nan_row |= __any_sync(0xffffffffu, lane < n && not_finite(x));  // NaN or ±inf: q or k non-finite
        const float mc = warp_max(x);
        const float mn = fmaxf(m, mc);
        if (mn == -INFINITY) continue;  // nothing finite yet (keys of -inf score)
        // raw scores: scale · (x − max) ≤ 0 never overflows to +inf (any finite f32 scale, docs/api.md)
        const float alpha = exp2f((m - mn) * scale * LOG2E);  // m = -inf on the first key tile: 0
        const float pr = lane < n ? exp2f((x - mn) * scale * LOG2E) : 0.f;
        l = l * alpha + warp_sum(pr);
        for (int r = 0; r < MAX_DPL; ++r) acc[r] *= alpha;
        for (int jj = 0; jj < n; ++jj) {
          const float pj = __shfl_sync(0xffffffffu, pr, jj);
          const T* vp = v + ((i64)(pc + jj) * Hkv + kvh) * D;
          for (int r = 0; r < MAX_DPL; ++r) if (lane + r * WARP < D) acc[r] += pj * ld(vp, lane + r * WARP);
        }
        m = mn;
      }
    }
    if (nan_row) l = m = NAN;
    const float inv = l > 0.f ? 1.f / l : (l == 0.f ? 0.f : NAN);
    for (int r = 0; r < MAX_DPL; ++r) if (lane + r * WARP < D) st(out, ((i64)t * Hq + h) * D + lane + r * WARP, acc[r] * inv);
    if (lane == 0) lse[(i64)t * Hq + h] = l > 0.f ? m * scale + log2f(l) * LN2 : (l == 0.f ? -INFINITY : NAN);
  }
}

#define FORWARD_ENTRY(N, T)                                                                                    \
  extern "C" __global__ void __launch_bounds__(FWD_WARPS * WARP) forward_##N(                                  \
      const T* q, const T* k, const T* v, const int* indices, T* out, float* lse, const int* cuq, const int* cu, \
      int nseq, int T_, int Hq, int Hkv, int D, int B, int topk, int causal, float scale) {                     \
    forward<T>(q, k, v, indices, out, lse, cuq, cu, nseq, T_, Hq, Hkv, D, B, topk, causal, scale);             \
  }
MOBA_DTYPES(FORWARD_ENTRY)

// ---------------------------------------------------------------------------------------------------
// Tensor-core forward (f16/bf16, D = 64 or 128): gather-and-densify over query windows (window.cuh).
// A CTA of 4 warps owns (query head h, window of BQ rows). For each key block with >= 1 window row that
// chose it, the rows are taken CH = 64 at a time: their Q rows are gathered into a dense shared tile, each
// warp owns 16 of them and, for every KT-key tile of the block (K, V staged in shared memory),
//   S = Q·Kᵀ (mma), masked (past the block end; causal: key > row), online softmax in f32 (exp2, running
//   max m and sum l per row), O += P·V with P packed to 16 bits straight from the S accumulators.
// The per-row state lives for the whole window: m, l in shared memory, the f32 accumulator O in `acc`
// (global [T, Hq, D], rows owned by this CTA only); a warp loads its 16 rows' O into registers once per
// (block, chunk) and writes them back. Epilogue: out = O / l, lse = (m + log2 l)·ln 2; rows with no keys
// give 0 / -inf, NaN rows NaN. Everything a row computes depends only on that row: deterministic.
#include "mma.cuh"
#include "window.cuh"

constexpr int TC_WARPS = 4;
constexpr int CH = TC_WARPS * 16;  // gathered rows per chunk

#ifndef MOBA_NO_HALF
template <typename T, int D, int KT>
struct FwdSmem {
  T *q, *k, *v;
  float *m, *l;
  int* row;  // chunk row -> window-local row id (-1: padding)
  WindowLists L;
  __device__ FwdSmem(char* p, int BQ) {
    q = (T*)p; p += CH * (D + PAD) * sizeof(T);
    k = (T*)p; p += KT * (D + PAD) * sizeof(T);
    v = (T*)p; p += KT * (D + PAD) * sizeof(T);
    L.rows = (unsigned short*)p; p += LIST_CAP * sizeof(unsigned short);
    m = (float*)p; p += BQ * sizeof(float);
    l = (float*)p; p += BQ * sizeof(float);
    row = (int*)p; p += CH * sizeof(int);
    L.cursor = (int*)p; p += NBR * sizeof(int);
    L.start = (int*)p;
  }
};

// One warp, one KT-key tile: the online-softmax update of its 16 rows (o, m, l in registers).
// keys [kt0, kt0 + KT) of the tile, valid below kend; trow[0..1]: token of rows g and g + 8 (-1: padding).
template <typename T, int D, int KT>
__device__ __forceinline__ void fwd_tile(const T* sq, const T* sk, const T* sv, float (*o)[4], float* m, float* l, const int* trow, int kt0,
                                         int kend, int causal, float sl2) {
  const int lane = threadIdx.x % WARP, warp = threadIdx.x / WARP, cq = lane % 4;
  constexpr int LD = D + PAD;
  float s[KT / 8][4];
#pragma unroll
  for (int n = 0; n < KT / 8; ++n) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.f;
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) {  // S = Q·Kᵀ
    unsigned a[4];
    frag_a(a, sq, LD, warp * 16, kk * 16);
#pragma unroll
    for (int np = 0; np < KT / 16; ++np) {
      unsigned b[4];
      frag_b_nk(b, sk, LD, np * 16, kk * 16);
      mma(T(), s[2 * np], a, b);
      mma(T(), s[2 * np + 1], a, b + 2);
    }
  }
  float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
  for (int n = 0; n < KT / 8; ++n)
#pragma unroll
    for (int e = 0; e < 4; ++e) {  // mask and scale (log2 units)
      const int key = kt0 + n * 8 + 2 * cq + (e & 1), t = trow[e / 2];
      const bool ok = t >= 0 && key < kend && (!causal || key <= t);
      s[n][e] = ok ? (not_finite(s[n][e]) ? NAN : s[n][e] * sl2) : -INFINITY;  // non-finite score: P, l, O NaN
      mx[e / 2] = fmaxf(mx[e / 2], s[n][e]);
    }
  float mu[2], sum[2] = {0.f, 0.f};
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const float mn = fmaxf(m[r], quad_max(mx[r]));
    mu[r] = safe_max(mn);
    const float alpha = exp2f(m[r] - mu[r]);
    m[r] = mn;
    l[r] *= alpha;
#pragma unroll
    for (int n = 0; n < D / 8; ++n) { o[n][2 * r] *= alpha; o[n][2 * r + 1] *= alpha; }
  }
#pragma unroll
  for (int n = 0; n < KT / 8; ++n)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      s[n][e] = exp2f(s[n][e] - mu[e / 2]);
      sum[e / 2] += s[n][e];
    }
  l[0] += quad_sum(sum[0]);
  l[1] += quad_sum(sum[1]);
#pragma unroll
  for (int kk = 0; kk < KT / 16; ++kk) {  // O += P·V
    unsigned a[4];
    a[0] = pack2(T(), s[2 * kk][0], s[2 * kk][1]);
    a[1] = pack2(T(), s[2 * kk][2], s[2 * kk][3]);
    a[2] = pack2(T(), s[2 * kk + 1][0], s[2 * kk + 1][1]);
    a[3] = pack2(T(), s[2 * kk + 1][2], s[2 * kk + 1][3]);
#pragma unroll
    for (int np = 0; np < D / 16; ++np) {
      unsigned b[4];
      frag_b_kn(b, sv, LD, kk * 16, np * 16);
      mma(T(), o[2 * np], a, b);
      mma(T(), o[2 * np + 1], a, b + 2);
    }
  }
}

// One (key block, chunk of up to CH window rows): gather Q, walk the block's key tiles, update the rows.
template <typename T, int D, int KT>
__device__ void fwd_chunk(const FwdSmem<T, D, KT>& sm, const T* q, const T* k, const T* v, float* acc, const Window& w, const unsigned short* lrows,
                          int n, int p0, int p1, int Hq, int h, int Hkv, int kvh, int causal, float sl2) {
  const int lane = threadIdx.x % WARP, warp = threadIdx.x / WARP, g = lane / 4, cq = lane % 4;
  __syncthreads();  // the previous chunk is done with row ids, Q, K and V
  if (threadIdx.x < CH) sm.row[threadIdx.x] = threadIdx.x < n ? (int)lrows[threadIdx.x] : -1;
  __syncthreads();
  stage_rows<D>(sm.q, CH, n, q, [&](int r) { return ((i64)(w.w0 + sm.row[r]) * Hq + h) * D; });
  int lr[2], trow[2];
  float o[D / 8][4], m[2], l[2];
  for (int r = 0; r < 2; ++r) {
    lr[r] = sm.row[warp * 16 + g + 8 * r];
    trow[r] = lr[r] >= 0 ? w.w0 + lr[r] : -1;
    m[r] = lr[r] >= 0 ? sm.m[lr[r]] : -INFINITY;
    l[r] = lr[r] >= 0 ? sm.l[lr[r]] : 0.f;
#pragma unroll
    for (int nn = 0; nn < D / 8; ++nn) {
      float2 x = make_float2(0.f, 0.f);
      if (lr[r] >= 0) x = *reinterpret_cast<const float2*>(acc + ((i64)trow[r] * Hq + h) * D + nn * 8 + 2 * cq);
      o[nn][2 * r] = x.x;
      o[nn][2 * r + 1] = x.y;
    }
  }
  for (int kt0 = p0; kt0 < p1; kt0 += KT) {
    const int nk = min(KT, p1 - kt0);
    __syncthreads();  // Q staged; the previous tile's K, V are no longer read
    stage_rows<D>(sm.k, KT, nk, k, [&](int r) { return ((i64)(kt0 + r) * Hkv + kvh) * D; });
    stage_rows<D>(sm.v, KT, nk, v, [&](int r) { return ((i64)(kt0 + r) * Hkv + kvh) * D; });
    __syncthreads();
    fwd_tile<T, D, KT>(sm.q, sm.k, sm.v, o, m, l, trow, kt0, p1, causal, sl2);
  }
  for (int r = 0; r < 2; ++r) {
    if (lr[r] < 0) continue;
    if (cq == 0) { sm.m[lr[r]] = m[r]; sm.l[lr[r]] = l[r]; }
#pragma unroll
    for (int nn = 0; nn < D / 8; ++nn)
      *reinterpret_cast<float2*>(acc + ((i64)trow[r] * Hq + h) * D + nn * 8 + 2 * cq) = make_float2(o[nn][2 * r], o[nn][2 * r + 1]);
  }
}

template <typename T, int D, int KT>
__device__ void forward_tc(const T* q, const T* k, const T* v, const int* indices, T* out, float* lse, float* acc, const int* cu,
                           const int* win_base, int nseq, int Hq, int Hkv, int B, int topk, int causal, float scale, int BQ) {
  extern __shared__ __align__(16) char smem_raw[];
  const FwdSmem<T, D, KT> sm(smem_raw, BQ);
  const Window w = window_of(cu, win_base, nseq, BQ);
  const int h = blockIdx.y, kvh = h / (Hq / Hkv);
  const float sl2 = scale * LOG2E;
  // zero this window's state: O rows in acc, m = -inf, l = 0
  for (int i = threadIdx.x; i < w.nrows * (D / 4); i += blockDim.x) {
    const int r = i / (D / 4), c = (i - r * (D / 4)) * 4;
    *reinterpret_cast<float4*>(acc + ((i64)(w.w0 + r) * Hq + h) * D + c) = make_float4(0.f, 0.f, 0.f, 0.f);
  }
  for (int r = threadIdx.x; r < w.nrows; r += blockDim.x) { sm.m[r] = -INFINITY; sm.l[r] = 0.f; }
  const int nb = window_blocks(w, B, causal);
  for (int j0 = 0; j0 < nb; j0 += NBR) {
    build_lists(sm.L, indices, w, Hq, h, topk, j0);
    for (int jj = 0; jj < NBR && j0 + jj < nb; ++jj) {
      const int b0 = sm.L.start[jj], cnt = sm.L.start[jj + 1] - b0;
      if (cnt == 0) continue;  // uniform
      const int p0 = w.s0 + (j0 + jj) * B, p1 = min(p0 + B, w.s1);
      for (int c0 = 0; c0 < cnt; c0 += CH)
        fwd_chunk<T, D, KT>(sm, q, k, v, acc, w, sm.L.rows + b0 + c0, min(CH, cnt - c0), p0, p1, Hq, h, Hkv, kvh, causal, sl2);
    }
  }
  __syncthreads();  // every row's state is final
  for (int i = threadIdx.x; i < w.nrows * (D / 4); i += blockDim.x) {
    const int r = i / (D / 4), c = (i - r * (D / 4)) * 4;
    const float L = sm.l[r];
    const float inv = L > 0.f ? 1.f / L : (L == 0.f ? 0.f : NAN);
    const i64 o = ((i64)(w.w0 + r) * Hq + h) * D + c;
    const float4 x = *reinterpret_cast<const float4*>(acc + o);
    st(out, o, x.x * inv); st(out, o + 1, x.y * inv); st(out, o + 2, x.z * inv); st(out, o + 3, x.w * inv);
  }
  for (int r = threadIdx.x; r < w.nrows; r += blockDim.x) {
    const float L = sm.l[r];
    lse[(i64)(w.w0 + r) * Hq + h] = L > 0.f ? (sm.m[r] + log2f(L)) * LN2 : (L == 0.f ? -INFINITY : NAN);
  }
}

// ---------------------------------------------------------------------------------------------------
// Key-major forward (forward_kv + forward_merge), used when a whole key block fits in shared memory.
// One CTA per (key block, kv head) stages the block's K and V once, then walks the block's collected
// query lists (every query head of the group) in chunks of CH rows: a warp owns 16 rows and runs the
// online softmax over the block's 64-key tiles (fwd_tile). The unnormalised O and its (m, l), in log2
// units, are stored as the partial of (row, routing slot of this block): every partial has one writer.
// forward_merge merges a row's partials in slot order (fixed, so deterministic): M = max m, weights
// 2^(m - M), out = Σ w·O / Σ w·l, lse = (M + log2 Σ w·l)·ln 2. A row's K/V are read once per block
// instead of once per (query window, block) as in forward_tc.
template <typename T, int D>
struct FkvSmem {  // as seen while working on chunk buffer b (0 or 1): K and V shared, Q and row data double-buffered
  T *k, *v, *q;
  int *tok, *slot;  // chunk row -> token (-1: padding), position of this block in the row's indices
  static constexpr int BUF = CH * (D + PAD) * sizeof(T) + 2 * CH * sizeof(int);
  __device__ FkvSmem(char* p, int nkeys, int b) {
    k = (T*)p; p += nkeys * (D + PAD) * sizeof(T);
    v = (T*)p; p += nkeys * (D + PAD) * sizeof(T);
    p += b * BUF;
    q = (T*)p; p += CH * (D + PAD) * sizeof(T);
    tok = (int*)p; p += CH * sizeof(int);
    slot = (int*)p;
  }
};

// Starts loading chunk rows [0, n) (list entries [0, n) of `list`/`slots`) into a chunk buffer by cp.async,
// one committed group: tokens, slots and Q; padding rows get token -1 by plain stores. `pt`: the tokens of
// this thread's rows of the Q copy, loaded one chunk ahead (fkv_ahead). Visible after cp_async_wait and a
// barrier.
template <typename T, int D>
__device__ void fkv_issue(const FkvSmem<T, D>& sm, const T* q, const int* list, const int* slots, int n, int Hq, int h, const int* pt) {
  constexpr int V = D / 8, RPT = CH * V / (TC_WARPS * WARP);
  if (threadIdx.x < CH) {
    if ((int)threadIdx.x < n) {
      cp_async4(sm.tok + threadIdx.x, list + threadIdx.x);
      cp_async4(sm.slot + threadIdx.x, slots + threadIdx.x);
    } else {
      sm.tok[threadIdx.x] = -1;
      sm.slot[threadIdx.x] = 0;
    }
  }
#pragma unroll
  for (int u = 0; u < RPT; ++u) {
    const int i = threadIdx.x + u * TC_WARPS * WARP, r = i / V, c = (i - r * V) * 8;
    cp_async16(sm.q + r * (D + PAD) + c, q + (r < n ? ((i64)pt[u] * Hq + h) * D + c : 0), r < n);
  }
  cp_async_commit();
}

// Loads (into registers, no wait) the tokens of this thread's Q-copy rows of the chunk at list entries
// [c0, min(c0 + CH, end)).
template <int D>
__device__ __forceinline__ void fkv_ahead(const int* list, int c0, int end, int* pt) {
  constexpr int V = D / 8, RPT = CH * V / (TC_WARPS * WARP);
  static_assert(RPT * TC_WARPS * WARP == CH * V, "the Q copy gives every thread the same number of rows");
#pragma unroll
  for (int u = 0; u < RPT; ++u) {
    const int e = c0 + (int)(threadIdx.x + u * TC_WARPS * WARP) / V;
    pt[u] = e < end ? list[e] : 0;
  }
}

template <typename T, int D>
__device__ void forward_kv(const T* q, const T* k, const T* v, const int* slots, const int* offsets, const int* rows, float* part,
                           float* part_ml, const int* cu, const int* block_base, int nseq, int Hq, int Hkv, int B, int NB, int topk,
                           int causal, float scale, int kv0) {
  constexpr int KT = 64, LD = D + PAD;
  const int nkeys = (B + KT - 1) / KT * KT;
  extern __shared__ __align__(16) char smem_raw[];
  const FkvSmem<T, D> sm(smem_raw, nkeys, 0);
  const int lane = threadIdx.x % WARP, warp = threadIdx.x / WARP, g = lane / 4, cq = lane % 4;
  const int gb = blockIdx.x, kvh = kv0 + blockIdx.y, G = Hq / Hkv, Hs = gridDim.y * G;
  const int s = upper_index(block_base, nseq, gb), jl = gb - block_base[s];
  const int bstart = cu[s] + jl * B, bend = min(bstart + B, cu[s + 1]);
  const float sl2 = scale * LOG2E;
  // K and V by cp.async, in the first chunk's group (complete at its cp_async_wait)
  stage_rows_async<D>(sm.k, nkeys, bend - bstart, k, [&](int r) { return ((i64)(bstart + r) * Hkv + kvh) * D; });
  stage_rows_async<D>(sm.v, nkeys, bend - bstart, v, [&](int r) { return ((i64)(bstart + r) * Hkv + kvh) * D; });
  // the chunks: every query head of the group, its list for this block in CH-row pieces; chunk i + 1 loads
  // into the other buffer while chunk i is computed, and the tokens of chunk i + 2 load into registers
  const int hend = (kvh + 1) * G;
  int h = kvh * G, c0 = offsets[(i64)h * NB + gb], le = offsets[(i64)h * NB + gb + 1];
  auto next = [&](int& hh, int& cc, int& ee) {  // first non-empty chunk at or after (hh, cc)
    while (hh < hend && cc >= ee) {
      if (++hh < hend) { cc = offsets[(i64)hh * NB + gb]; ee = offsets[(i64)hh * NB + gb + 1]; }
    }
  };
  int pt[CH * (D / 8) / (TC_WARPS * WARP)];
  next(h, c0, le);
  if (h < hend) {
    fkv_ahead<D>(rows, c0, le, pt);
    fkv_issue<T, D>(sm, q, rows + c0, slots + c0, min(CH, le - c0), Hq, h, pt);
  }
  int hn = h, cn = c0 + CH, en = le;
  next(hn, cn, en);
  if (hn < hend) fkv_ahead<D>(rows, cn, en, pt);
  for (int b = 0; h < hend; b ^= 1) {
    const FkvSmem<T, D> cur(smem_raw, nkeys, b), nxt(smem_raw, nkeys, b ^ 1);
    if (hn < hend) fkv_issue<T, D>(nxt, q, rows + cn, slots + cn, min(CH, en - cn), Hq, hn, pt);
    else cp_async_commit();  // an empty group keeps the count
    int h2 = hn, c2 = cn + CH, e2 = en;
    next(h2, c2, e2);
    if (h2 < hend) fkv_ahead<D>(rows, c2, e2, pt);
    cp_async_wait<1>();  // this chunk's group is complete (the next one may still be in flight)
    __syncthreads();     // ... for every thread; K, V (first chunk) and the padding rows' plain stores too
    const int trow[2] = {cur.tok[warp * 16 + g], cur.tok[warp * 16 + g + 8]};
    float o[D / 8][4], m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};
#pragma unroll
    for (int nn = 0; nn < D / 8; ++nn) o[nn][0] = o[nn][1] = o[nn][2] = o[nn][3] = 0.f;
    for (int kt0 = bstart; kt0 < bend; kt0 += KT)
      fwd_tile<T, D, KT>(cur.q, sm.k + (kt0 - bstart) * LD, sm.v + (kt0 - bstart) * LD, o, m, l, trow, kt0, bend, causal, sl2);
    for (int r = 0; r < 2; ++r) {
      const int t = trow[r];
      if (t < 0) continue;
      const i64 pr = ((i64)t * Hs + (h - kv0 * G)) * topk + cur.slot[warp * 16 + g + 8 * r];
      if (cq == 0) *reinterpret_cast<float2*>(part_ml + pr * 2) = make_float2(m[r], l[r]);
#pragma unroll
      for (int nn = 0; nn < D / 8; ++nn)
        *reinterpret_cast<float2*>(part + pr * D + nn * 8 + 2 * cq) = make_float2(o[nn][2 * r], o[nn][2 * r + 1]);
    }
    __syncthreads();  // buffer b is no longer read
    h = hn; c0 = cn; le = en;
    hn = h2; cn = c2; en = e2;
  }
  cp_async_commit();  // K/V's group was never waited for when the block has no rows
  cp_async_wait<0>();
}

// out and lse of query heads [h0, h0 + Hs) from forward_kv's partials; one thread per 4 channels of a row.
template <typename T>
__device__ void forward_merge(const float* part, const float* part_ml, const int* indices, T* out, float* lse, i64 T_, int Hq, int h0,
                               int Hs, int D, int topk) {
  const int C4 = D / 4;
  const i64 n = T_ * Hs * C4;
  for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (i64)gridDim.x * blockDim.x) {
    const int c = (int)(i % C4) * 4;
    const i64 rest = i / C4, t = rest / Hs;
    const int hl = (int)(rest - t * Hs);
    const i64 rw = t * Hq + h0 + hl, pr0 = (t * Hs + hl) * topk;
    float M = -INFINITY;
    for (int p = 0; p < topk; ++p)
      if (indices[rw * topk + p] >= 0) M = fmaxf(M, part_ml[(pr0 + p) * 2]);
    const float mu = safe_max(M);
    float L = 0.f;
    float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
    for (int p0 = 0; p0 < topk; p0 += 8) {  // 8 slots at a time: their loads are issued together
      float2 ml[8];
      float4 x[8];
#pragma unroll
      for (int u = 0; u < 8; ++u) {
        const bool ok = p0 + u < topk && indices[rw * topk + p0 + u] >= 0;
        ml[u] = ok ? *reinterpret_cast<const float2*>(part_ml + (pr0 + p0 + u) * 2) : make_float2(-INFINITY, 0.f);
        x[u] = ok ? *reinterpret_cast<const float4*>(part + (pr0 + p0 + u) * D + c) : make_float4(0.f, 0.f, 0.f, 0.f);
      }
#pragma unroll
      for (int u = 0; u < 8; ++u) {
        if (ml[u].x == -INFINITY && ml[u].y == 0.f) continue;  // an unused slot (or a block with no visible key)
        const float w = exp2f(ml[u].x - mu);
        L += w * ml[u].y;
        acc.x += w * x[u].x; acc.y += w * x[u].y; acc.z += w * x[u].z; acc.w += w * x[u].w;
      }
    }
    const float inv = L > 0.f ? 1.f / L : (L == 0.f ? 0.f : NAN);
    const i64 o = rw * D + c;
    st(out, o, acc.x * inv); st(out, o + 1, acc.y * inv); st(out, o + 2, acc.z * inv); st(out, o + 3, acc.w * inv);
    if (c == 0) lse[rw] = L > 0.f ? (M + log2f(L)) * LN2 : (L == 0.f ? -INFINITY : NAN);
  }
}

#define FORWARD_KV_ENTRIES(N, T, D)                                                                                     \
  extern "C" __global__ void __launch_bounds__(TC_WARPS * WARP) forward_kv_d##D##_##N(                                  \
      const T* q, const T* k, const T* v, const int* slots, const int* offsets, const int* rows, float* part,            \
      float* part_ml, const int* cu, const int* block_base, int nseq, int Hq, int Hkv, int B, int NB, int topk,          \
      int causal, float scale, int kv0) {                                                                              \
    forward_kv<T, D>(q, k, v, slots, offsets, rows, part, part_ml, cu, block_base, nseq, Hq, Hkv, B, NB, topk, causal, \
                     scale, kv0);                                                                                      \
  }
FORWARD_KV_ENTRIES(f16, __half, 64)
FORWARD_KV_ENTRIES(f16, __half, 128)
FORWARD_KV_ENTRIES(bf16, __nv_bfloat16, 64)
FORWARD_KV_ENTRIES(bf16, __nv_bfloat16, 128)
#define FORWARD_MERGE_ENTRY(N, T)                                                                                     \
  extern "C" __global__ void forward_merge_##N(const float* part, const float* part_ml, const int* indices, T* out,    \
                                                float* lse, long long T_, int Hq, int h0, int Hs, int D, int topk) {    \
    forward_merge<T>(part, part_ml, indices, out, lse, T_, Hq, h0, Hs, D, topk);                                     \
  }
FORWARD_MERGE_ENTRY(f16, __half)
FORWARD_MERGE_ENTRY(bf16, __nv_bfloat16)

#define FORWARD_TC_ENTRY(N, T, D)                                                                                        \
  extern "C" __global__ void __launch_bounds__(TC_WARPS * WARP) forward_tc_d##D##_##N(                                   \
      const T* q, const T* k, const T* v, const int* indices, T* out, float* lse, float* acc, const int* cu,             \
      const int* win_base, int nseq, int Hq, int Hkv, int B, int topk, int causal, float scale, int BQ) {               \
    forward_tc<T, D, 64>(q, k, v, indices, out, lse, acc, cu, win_base, nseq, Hq, Hkv, B, topk, causal, scale, BQ);    \
  }
FORWARD_TC_ENTRY(f16, __half, 64)
FORWARD_TC_ENTRY(f16, __half, 128)
FORWARD_TC_ENTRY(bf16, __nv_bfloat16, 64)
FORWARD_TC_ENTRY(bf16, __nv_bfloat16, 128)
#endif
