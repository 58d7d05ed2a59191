// Routing (SPEC §2-3). centroids: per (global block, kv head) the f32 mean of the block's actual keys,
// [totalBlocks, Hkv, D]. route: fused scoring + running top-k; the [T, NB] score matrix never exists.
// A CTA (ROUTE_WARPS warps) owns a tile of ROUTE_ROWS consecutive query rows of one sequence and one
// query head; it walks the eligible centroids in tiles of `ct` staged in shared memory; lane j of a
// warp scores centroid j of the tile for one row at a time, and lane 0 inserts the winners into the
// row's top-k (shared memory, sorted by score descending, ties to the higher block). Two barriers per
// centroid tile: the tile is complete before anyone reads it and nobody still reads it when the next
// one is written. Exact and deterministic: every score is one fixed-order f32 dot product.
#include "common.cuh"
#include "mma.cuh"
using namespace moba;

constexpr int ROUTE_ROWS = 16;  // query rows per CTA
constexpr int ROUTE_WARPS = 4;  // 128 threads; warp w owns rows w, w + 4, ...

extern "C" __global__ void centroids(const void* kraw, int dtype, float* cent, const int* cu, const int* block_base, int nseq,
                                     int B, int C, int total_blocks) {
  // grid: (total_blocks, ceil(C / blockDim.x)); thread = one channel of one block
  int g = blockIdx.x;
  int c = blockIdx.y * blockDim.x + threadIdx.x;
  if (g >= total_blocks || c >= C) return;
  int s = upper_index(block_base, nseq, g);
  i64 p0 = cu[s] + (i64)(g - block_base[s]) * B;
  i64 p1 = min(p0 + B, (i64)cu[s + 1]);
  float sum = 0.f;
  for (i64 p = p0; p < p1; ++p) {
    i64 e = p * C + c;
#ifndef MOBA_NO_HALF
    sum += dtype == 0 ? ld((const float*)kraw, e) : dtype == 1 ? ld((const __half*)kraw, e) : ld((const __nv_bfloat16*)kraw, e);
#else
    sum += ld((const float*)kraw, e);
#endif
  }
  cent[(i64)g * C + c] = sum / (float)(p1 - p0);  // mean over the block's actual tokens
}

// Offers block j with score x to a top-k list sorted descending; blocks arrive ascending, so a tie
// goes to j (the higher index). NaN and -inf never enter.
__device__ __forceinline__ void topk_offer(float* val, int* idx, int& n, int slots, float x, int j) {
  if (!(x > -INFINITY)) return;
  if (n == slots) {
    if (!(x >= val[n - 1])) return;
    --n;
  }
  int p = n++;
  for (; p > 0 && val[p - 1] <= x; --p) { val[p] = val[p - 1]; idx[p] = idx[p - 1]; }
  val[p] = x;
  idx[p] = j;
}

// Query rows follow `cuq`, keys `cu` (the same pointer for self-attention); query row o + p of sequence s sits at
// its key position p (o = cuq[s + 1] - nk: bottom-right alignment, SPEC §8; o = cu[s] for self-attention).
template <typename T>
__device__ void route(const T* q, const float* cent, int* indices, const int* cuq, const int* cu, const int* block_base, const int* tile_base,
                      int nseq, int Hq, int Hkv, int D, int B, int topk, int causal, int ct) {
  extern __shared__ float smem[];
  float* sc = smem;                              // [ct][D + 1] centroid tile (padded: lane j reads row j)
  float* sq = sc + ct * (D + 1);                 // [ROUTE_ROWS][D] query rows
  float* tv = sq + ROUTE_ROWS * D;               // [ROUTE_ROWS][topk] top-k scores
  int* ti = (int*)(tv + ROUTE_ROWS * topk);      // [ROUTE_ROWS][topk] top-k blocks
  int* tn = ti + ROUTE_ROWS * topk;              // [ROUTE_ROWS] counts
  const int h = blockIdx.y, kvh = h / (Hq / Hkv), lane = threadIdx.x % WARP, warp = threadIdx.x / WARP;
  const int s = upper_index(tile_base, nseq, blockIdx.x);
  const i64 len = cu[s + 1] - cu[s], s0 = cuq[s + 1] - len;  // keys of the sequence; the query row at key position 0
  const i64 r0 = cuq[s] + (i64)(blockIdx.x - tile_base[s]) * ROUTE_ROWS;
  const int rows = (int)min((i64)ROUTE_ROWS, cuq[s + 1] - r0);
  const int nblocks = (int)((len + B - 1) / B), slots = causal ? topk - 1 : topk;
  for (int i = threadIdx.x; i < ROUTE_ROWS * D; i += blockDim.x)
    sq[i] = i / D < rows ? ld(q, ((r0 + i / D) * Hq + h) * D + i % D) : 0.f;
  if (threadIdx.x < ROUTE_ROWS) tn[threadIdx.x] = 0;
  // eligible blocks of a row: causal, those fully before its own block; else every block of the sequence
  const int elig_max = causal ? (int)((r0 + rows - 1 - s0) / B) : nblocks;
  for (int c0 = 0; slots > 0 && c0 < elig_max; c0 += ct) {
    const int nc = min(ct, elig_max - c0);
    __syncthreads();  // the previous tile is no longer read (and sq / tn are ready on the first pass)
    for (int i = threadIdx.x; i < nc * D; i += blockDim.x)
      sc[(i / D) * (D + 1) + i % D] = cent[((i64)(block_base[s] + c0 + i / D) * Hkv + kvh) * D + i % D];
    __syncthreads();  // the tile is complete
    for (int r = warp; r < rows; r += ROUTE_WARPS) {
      const int elig = causal ? (int)((r0 + r - s0) / B) : nblocks;
      const int j = c0 + lane;
      float x = -INFINITY;
      if (lane < nc && j < elig) {
        x = 0.f;
        for (int d = 0; d < D; ++d) x += sq[r * D + d] * sc[lane * (D + 1) + d];
        if (x != x) x = -INFINITY;  // NaN never wins
      }
      // only lanes that can enter the list are offered, in ascending block order, by lane 0
      const float thr = tn[r] == slots ? tv[r * topk + slots - 1] : -INFINITY;
      unsigned m = __ballot_sync(0xffffffffu, x > -INFINITY && x >= thr);
      __syncwarp();
      while (m) {
        const int l = __ffs(m) - 1;
        m &= m - 1;
        const float xl = __shfl_sync(0xffffffffu, x, l);
        if (lane == 0) { int n = tn[r]; topk_offer(tv + r * topk, ti + r * topk, n, slots, xl, c0 + l); tn[r] = n; }
      }
      __syncwarp();
    }
  }
  __syncthreads();
  // write each row ascending, the own block added when causal, then -1 padding
  for (int r = threadIdx.x; r < rows; r += blockDim.x) {
    int* o = indices + ((r0 + r) * Hq + h) * topk;
    int n = slots > 0 ? tn[r] : 0;
    int sel[64];
    for (int i = 0; i < n; ++i) sel[i] = ti[r * topk + i];
    if (causal) sel[n++] = (int)((r0 + r - s0) / B);
    for (int i = 1; i < n; ++i)  // insertion sort, n <= 64
      for (int p = i; p > 0 && sel[p - 1] > sel[p]; --p) { int t = sel[p]; sel[p] = sel[p - 1]; sel[p - 1] = t; }
    for (int i = 0; i < topk; ++i) o[i] = i < n ? sel[i] : -1;
  }
}

#define ROUTE_ENTRY(N, T)                                                                                         \
  extern "C" __global__ void __launch_bounds__(ROUTE_WARPS * WARP) route_##N(                                     \
      const T* q, const float* cent, int* indices, const int* cuq, const int* cu, const int* block_base,          \
      const int* tile_base, int nseq, int Hq, int Hkv, int D, int B, int topk, int causal, int ct) {               \
    route<T>(q, cent, indices, cuq, cu, block_base, tile_base, nseq, Hq, Hkv, D, B, topk, causal, ct);             \
  }
MOBA_DTYPES(ROUTE_ENTRY)

#ifndef MOBA_NO_HALF
// ---------------------------------------------------------------------------------------------------
// Tensor-core router (f16 / bf16 queries, D 64 or 128).
//
// Exactness: the queries are already 16-bit, so only the f32 centroids need care. centroid_split writes
// each centroid as c = hi + lo · 2^-SHIFT with hi, lo in the query dtype (lo pre-scaled so that f16's
// narrow exponent range does not flush it); a score is two m16n8k16 MMAs with f32 accumulation,
// q·hi + (q·lo) · 2^-SHIFT, which leaves a relative error of about 2^-17 (bf16) / 2^-22 (f16) of the
// centroid instead of the 2^-9 / 2^-12 of rounding it once. Every score is computed the same way on
// every run (fixed MMA order), so routing is deterministic.
//
// A CTA (RTC_WARPS warps) owns RTC_ROWS consecutive query rows of one sequence and one query head; warp w
// holds rows 16w..16w+15 as A fragments in registers for the whole kernel. Centroid tiles of RTC_CT
// blocks (hi and lo) are staged in shared memory between two barriers (complete before anyone reads it;
// nobody still reads it when the next one is written). Each lane of the accumulator layout sees rows g
// and g + 8 (g = lane / 4) and columns 2c, 2c + 1 of every 8-column n-tile (c = lane % 4), so it keeps,
// per row, its own top-k over the columns it sees (shared memory, strided so that a warp's lanes hit
// distinct banks); the 4 lanes of a row share their thresholds after every 16 columns (quad_max). Those columns arrive in ascending block order, so a tie goes to the newcomer (the
// higher block), as in topk_offer. At the end the four lists of a row (disjoint columns) are merged by
// (score descending, block descending): the exact top-k of the row.
constexpr int RTC_WARPS = 4;
constexpr int RTC_THREADS = RTC_WARPS * WARP;
constexpr int RTC_ROWS = 16 * RTC_WARPS;  // query rows per CTA
constexpr int RTC_CT = 32;                // centroids per shared tile

__device__ __forceinline__ int split_shift(__half) { return 11; }
__device__ __forceinline__ int split_shift(__nv_bfloat16) { return 8; }

// The row tile of CTA blockIdx.x (in reverse: the longest, latest causal tiles start first): sequence s,
// query rows [r0, r0 + rows) (tiles of `cuq`), s0 the query row at key position 0 (as in route), its number
// of key blocks.
struct RtcTile {
  int s, rows, nblocks;
  i64 s0, r0;
};
__device__ __forceinline__ RtcTile rtc_tile(const int* cuq, const int* cu, const int* tile_base, int nseq, int B) {
  RtcTile t;
  const int tile = gridDim.x - 1 - blockIdx.x;
  t.s = upper_index(tile_base, nseq, tile);
  const i64 len = cu[t.s + 1] - cu[t.s];
  t.s0 = cuq[t.s + 1] - len;
  t.r0 = cuq[t.s] + (i64)(tile - tile_base[t.s]) * RTC_ROWS;
  t.rows = (int)min((i64)RTC_ROWS, cuq[t.s + 1] - t.r0);
  t.nblocks = (int)((len + B - 1) / B);
  return t;
}

// A warp's 16 query rows [wr, wr + 16) of the tile as A fragments: qa[ks][i] holds row g + 8 (i % 2),
// columns 16 ks + 2c + 8 (i / 2); rows past `rows` are zero.
template <typename T, int D>
__device__ __forceinline__ void rtc_load_q(unsigned (*qa)[4], const T* q, i64 r0, int rows, int wr, int Hq, int h) {
  const int lane = threadIdx.x % WARP, g = lane / 4, c = lane % 4;
#pragma unroll
  for (int ks = 0; ks < D / 16; ++ks)
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int r = wr + g + (i % 2) * 8, col = ks * 16 + 2 * c + (i / 2) * 8;
      qa[ks][i] = r < rows ? *reinterpret_cast<const unsigned*>(q + ((r0 + r) * Hq + h) * D + col) : 0u;
    }
}

// Scores of the warp's 16 rows against centroids [16 np, 16 np + 16) of a staged tile: q·hi into ah, q·lo
// into al (two 8-column n-tiles each), fixed MMA order.
template <typename T, int D>
__device__ __forceinline__ void rtc_scores(float (*ah)[4], float (*al)[4], const unsigned (*qa)[4], const T* th, const T* tl, int np) {
  constexpr int LD = D + PAD;
#pragma unroll
  for (int ks = 0; ks < D / 16; ++ks) {
    unsigned b[4];
    frag_b_nk(b, th, LD, np * 16, ks * 16);
    mma(T(), ah[0], qa[ks], b);
    mma(T(), ah[1], qa[ks], b + 2);
    frag_b_nk(b, tl, LD, np * 16, ks * 16);
    mma(T(), al[0], qa[ks], b);
    mma(T(), al[1], qa[ks], b + 2);
  }
}

template <typename T>
__device__ void centroid_split(const float* cent, T* hi, T* lo, i64 n) {
  const float scale = (float)(1 << split_shift(T()));
  for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (i64)gridDim.x * blockDim.x) {
    const float c = cent[i];
    T h;
    st(&h, 0, c);
    const float hf = ld(&h, 0);
    hi[i] = h;
    st(lo, i, hf - hf == 0.f ? (c - hf) * scale : 0.f);  // an infinite hi carries the whole value
  }
}

// Offers block j with score x (x >= thr, already checked) to one lane's list of one row: `v`/`ix` point at
// its first slot, consecutive slots are `stride` apart; sorted by score descending, ties higher block first.
__device__ __forceinline__ void lane_offer(float* v, int* ix, int stride, int& n, float& thr, int slots, float x, int j) {
  if (n == slots) --n;  // x >= the last entry: it goes
  int p = n++;
  for (; p > 0 && v[(p - 1) * stride] <= x; --p) { v[p * stride] = v[(p - 1) * stride]; ix[p * stride] = ix[(p - 1) * stride]; }
  v[p * stride] = x;
  ix[p * stride] = j;
  if (n == slots) thr = fmaxf(thr, v[(slots - 1) * stride]);  // thr may already be higher (shared in the quad)
}

template <typename T, int D>
__device__ void route_tc(const T* q, const T* chi, const T* clo, int* indices, const int* cuq, const int* cu, const int* block_base,
                         const int* tile_base, int nseq, int Hq, int Hkv, int B, int topk, int causal) {
  constexpr int LD = D + PAD;
  constexpr int LS = 2 * RTC_THREADS;  // stride between the slots of one lane-row list
  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* sh = reinterpret_cast<T*>(smem_raw);   // [RTC_CT][LD] centroid tile, hi
  T* sl = sh + RTC_CT * LD;                 // [RTC_CT][LD] centroid tile, lo (scaled)
  float* lv = reinterpret_cast<float*>(sl + RTC_CT * LD);  // [slots][2][RTC_THREADS] list scores
  const int slots = causal ? topk - 1 : topk;
  int* li = reinterpret_cast<int*>(lv + slots * LS);        // [slots][2][RTC_THREADS] list blocks
  int* ln = li + slots * LS;                                // [2][RTC_THREADS] list lengths
  const int tid = threadIdx.x, lane = tid % WARP, warp = tid / WARP, g = lane / 4, c = lane % 4;
  const int h = blockIdx.y, kvh = h / (Hq / Hkv);
  const RtcTile rt = rtc_tile(cuq, cu, tile_base, nseq, B);
  const int s = rt.s, rows = rt.rows, nblocks = rt.nblocks;
  const i64 s0 = rt.s0, r0 = rt.r0;
  const int wr = warp * 16;

  unsigned qa[D / 16][4];  // the warp's 16 query rows as A fragments
  rtc_load_q<T, D>(qa, q, r0, rows, wr, Hq, h);
  // per lane: rows g (half 0) and g + 8 (half 1) of the warp; their eligible blocks (0 past the tile)
  int elig[2], n[2] = {0, 0};
  float thr[2] = {-INFINITY, -INFINITY};
#pragma unroll
  for (int hf = 0; hf < 2; ++hf) {
    const int r = wr + g + 8 * hf;
    elig[hf] = r >= rows ? 0 : causal ? (int)((r0 + r - s0) / B) : nblocks;
  }
  const float lo_scale = 1.f / (float)(1 << split_shift(T()));
  const int elig_max = causal ? (int)((r0 + rows - 1 - s0) / B) : nblocks;
  const i64 cbase = (i64)block_base[s] * Hkv + kvh;  // centroid row of block 0 of this sequence and kv head
  for (int c0 = 0; slots > 0 && c0 < elig_max; c0 += RTC_CT) {
    const int nc = min(RTC_CT, elig_max - c0);
    __syncthreads();  // nobody still reads the previous tile
    stage_rows<D>(sh, RTC_CT, nc, chi, [&](int r) { return (cbase + (i64)(c0 + r) * Hkv) * D; });
    stage_rows<D>(sl, RTC_CT, nc, clo, [&](int r) { return (cbase + (i64)(c0 + r) * Hkv) * D; });
    __syncthreads();  // the tile is complete
    if (wr >= rows) continue;
    for (int np = 0; np * 16 < nc; ++np) {
      float ah[2][4] = {}, al[2][4] = {};
      rtc_scores<T, D>(ah, al, qa, sh, sl, np);
#pragma unroll
      for (int nt = 0; nt < 2; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int hf = e / 2, j = c0 + np * 16 + nt * 8 + 2 * c + e % 2;
          const float x = ah[nt][e] + al[nt][e] * lo_scale;
          if (j < elig[hf] && x > -INFINITY && x >= thr[hf])  // NaN fails every comparison: never selected
            lane_offer(lv + hf * RTC_THREADS + tid, li + hf * RTC_THREADS + tid, LS, n[hf], thr[hf], slots, x, j);
        }
      // the 4 lanes of a quad hold disjoint columns of the same two rows: a full list's last score is a lower
      // bound on its row's k-th best, so the quad's largest bound filters every lane's offers (3-4x fewer
      // insertions than independent lane thresholds; exact: only scores below the row's k-th best are skipped)
#pragma unroll
      for (int hf = 0; hf < 2; ++hf) thr[hf] = quad_max(thr[hf]);
    }
  }
  ln[tid] = n[0];
  ln[RTC_THREADS + tid] = n[1];
  __syncthreads();
  // merge: thread r < rows takes row r (warp r / 16, half (r % 16) / 8, lanes 4 g .. 4 g + 3)
  const int r = tid;
  if (r >= rows) return;
  const int hf = (r % 16) / 8, t0 = (r / 16) * WARP + (r % 8) * 4;
  int pos[4] = {0, 0, 0, 0};
  int sel[64];
  int m = 0;
  for (; m < slots; ++m) {
    int best = -1, bj = -1;
    float bv = 0.f;
    for (int l = 0; l < 4; ++l) {
      const int o = hf * RTC_THREADS + t0 + l;
      if (pos[l] >= ln[o]) continue;
      const float v = lv[pos[l] * LS + o];
      const int j = li[pos[l] * LS + o];
      if (best < 0 || v > bv || (v == bv && j > bj)) { best = l; bv = v; bj = j; }
    }
    if (best < 0) break;
    ++pos[best];
    sel[m] = bj;
  }
  if (causal) sel[m++] = (int)((r0 + r - s0) / B);
  for (int i = 1; i < m; ++i)  // insertion sort, m <= 64
    for (int p = i; p > 0 && sel[p - 1] > sel[p]; --p) { int t = sel[p]; sel[p] = sel[p - 1]; sel[p - 1] = t; }
  int* o = indices + ((r0 + r) * Hq + h) * topk;
  for (int i = 0; i < topk; ++i) o[i] = i < m ? sel[i] : -1;
}

// ---------------------------------------------------------------------------------------------------
// route_tcs: the tensor-core router with register lists (topk - causal <= RTS_K). The scores of a centroid
// tile are computed as in route_tc (hi + lo MMAs, same fixed order, so the same values) but written to a
// shared [row][centroid] tile; then every thread takes one half of one row's columns (thread t: row
// t % RTC_ROWS, columns [h·RTC_CT/2, (h + 1)·RTC_CT/2) of the tile, h = t / RTC_ROWS) and walks them in
// ascending block order against its own list in registers (RTS_K entries, sorted descending, ties: the
// newcomer, a higher block, first): the unrolled compare-and-swap insertion runs for all offering lanes of
// a warp together. The two halves of a row exchange their k-th scores after every tile (a lower bound on
// the row's k-th best, so a shared filter that stays exact), and merge their lists at the end. Centroid
// tiles are double-buffered: tile i + 1 loads (cp.async) while tile i is scored.
constexpr int RTS_K = 8;
constexpr int RTS_HALVES = RTC_THREADS / RTC_ROWS;  // threads per row in the selection
static_assert(RTS_HALVES == 2 && RTC_CT % RTS_HALVES == 0, "route_tcs: two threads per row, each on half of a tile");

// Offers block j with score x to a register list of RTS_K entries; entries past `slots` fall off.
// Returns the list's `slots`-th score (-inf until that many entries arrived).
__device__ __forceinline__ float rts_offer(float* v, int* ix, int slots, float x, int j) {
#pragma unroll
  for (int i = 0; i < RTS_K; ++i) {
    const bool up = x >= v[i];
    const float tv = v[i];
    const int ti = ix[i];
    v[i] = up ? x : tv;
    ix[i] = up ? j : ti;
    x = up ? tv : x;
    j = up ? ti : j;
  }
  float kth = -INFINITY;
#pragma unroll
  for (int i = 0; i < RTS_K; ++i)
    if (i == slots - 1) kth = v[i];
  return kth;
}

template <typename T, int D>
__device__ void route_tcs(const T* q, const T* chi, const T* clo, int* indices, const int* cuq, const int* cu, const int* block_base,
                          const int* tile_base, int nseq, int Hq, int Hkv, int B, int topk, int causal) {
  constexpr int LD = D + PAD, SC = RTC_CT + 1;  // score tile row stride (odd: row owners hit distinct banks)
  constexpr int HC = RTC_CT / RTS_HALVES;       // columns of a tile per selecting thread
  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* sh = reinterpret_cast<T*>(smem_raw);                       // [2][RTC_CT][LD] centroid tiles, hi
  T* sl = sh + 2 * RTC_CT * LD;                                 // [2][RTC_CT][LD] centroid tiles, lo (scaled)
  float* sc = reinterpret_cast<float*>(sl + 2 * RTC_CT * LD);  // [RTC_ROWS][SC] scores of the tile
  float* kth_sh = sc + RTC_ROWS * SC;                           // [RTC_THREADS] each selecting thread's k-th score
  const int slots = causal ? topk - 1 : topk;
  const int tid = threadIdx.x, lane = tid % WARP, warp = tid / WARP, g = lane / 4, c = lane % 4;
  const int h = blockIdx.y, kvh = h / (Hq / Hkv);
  const RtcTile rt = rtc_tile(cuq, cu, tile_base, nseq, B);
  const int s = rt.s, rows = rt.rows, nblocks = rt.nblocks;
  const i64 s0 = rt.s0, r0 = rt.r0;
  const int wr = warp * 16;
  unsigned qa[D / 16][4];  // the warp's 16 query rows as A fragments
  rtc_load_q<T, D>(qa, q, r0, rows, wr, Hq, h);
  // selection: thread tid takes row my_row, columns [half·HC, (half + 1)·HC) of every tile
  const int my_row = tid % RTC_ROWS, half = tid / RTC_ROWS;
  const int my_elig = my_row >= rows ? 0 : causal ? (int)((r0 + my_row - s0) / B) : nblocks;
  float rv[RTS_K], thr = -INFINITY;
  int ri[RTS_K];
#pragma unroll
  for (int i = 0; i < RTS_K; ++i) { rv[i] = -INFINITY; ri[i] = -1; }
  const float lo_scale = 1.f / (float)(1 << split_shift(T()));
  const int elig_max = causal ? (int)((r0 + rows - 1 - s0) / B) : nblocks;
  const i64 cbase = (i64)block_base[s] * Hkv + kvh;
  auto issue = [&](int c0, int b) {
    const int nc = min(RTC_CT, elig_max - c0);
    stage_rows_async<D>(sh + b * RTC_CT * LD, RTC_CT, nc, chi, [&](int r) { return (cbase + (i64)(c0 + r) * Hkv) * D; });
    stage_rows_async<D>(sl + b * RTC_CT * LD, RTC_CT, nc, clo, [&](int r) { return (cbase + (i64)(c0 + r) * Hkv) * D; });
    cp_async_commit();
  };
  kth_sh[tid] = -INFINITY;
  if (slots > 0 && elig_max > 0) issue(0, 0);
  for (int c0 = 0, buf = 0; slots > 0 && c0 < elig_max; c0 += RTC_CT, buf ^= 1) {
    const int nc = min(RTC_CT, elig_max - c0);
    // buffer buf ^ 1 was last read before the previous tile's second barrier: free to refill
    if (c0 + RTC_CT < elig_max) issue(c0 + RTC_CT, buf ^ 1);
    else cp_async_commit();  // an empty group keeps the count
    cp_async_wait<1>();      // tile c0 has landed
    __syncthreads();         // ... for every thread; and nobody still reads the score tile
    const T* th = sh + buf * RTC_CT * LD;
    const T* tl = sl + buf * RTC_CT * LD;
    if (wr < rows) {
      for (int np = 0; np * 16 < nc; ++np) {
        float ah[2][4] = {}, al[2][4] = {};
        rtc_scores<T, D>(ah, al, qa, th, tl, np);
#pragma unroll
        for (int nt = 0; nt < 2; ++nt)
#pragma unroll
          for (int e = 0; e < 4; ++e)
            sc[(wr + g + 8 * (e / 2)) * SC + np * 16 + nt * 8 + 2 * c + e % 2] = ah[nt][e] + al[nt][e] * lo_scale;
      }
    }
    __syncthreads();  // the score tile and the other half's k-th score are complete
    thr = fmaxf(thr, kth_sh[tid ^ RTC_ROWS]);  // the other half's k-th best: also a lower bound for the row
    if (my_row < rows) {
      const int n = min(nc, my_elig - c0) - half * HC;  // eligible columns of this half in the tile
#pragma unroll 4
      for (int jj = 0; jj < min(n, HC); ++jj) {
        const float x = sc[my_row * SC + half * HC + jj];
        if (x > -INFINITY && x >= thr) thr = fmaxf(thr, rts_offer(rv, ri, slots, x, c0 + half * HC + jj));  // NaN never passes
      }
      kth_sh[tid] = thr;  // read by the other half after the next tile's barriers
    }
  }
  // merge the two halves' lists of a row: half 1 hands its list over in shared memory (the score tile)
  __syncthreads();
  float* mv = sc;                                           // [RTS_K][RTC_ROWS]
  int* mi = reinterpret_cast<int*>(sc + RTS_K * RTC_ROWS);  // [RTS_K][RTC_ROWS]
  if (half == 1) {
#pragma unroll
    for (int i = 0; i < RTS_K; ++i) { mv[i * RTC_ROWS + my_row] = rv[i]; mi[i * RTC_ROWS + my_row] = ri[i]; }
  }
  __syncthreads();
  if (half == 1 || my_row >= rows) return;
#pragma unroll
  for (int i = 0; i < RTS_K; ++i) {  // insert the other half's entries by (score desc, block desc)
    float x = mv[i * RTC_ROWS + my_row];
    int j = mi[i * RTC_ROWS + my_row];
    if (j < 0) continue;  // an empty entry
#pragma unroll
    for (int p = 0; p < RTS_K; ++p) {
      const bool up = x > rv[p] || (x == rv[p] && j > ri[p]);
      const float tv = rv[p];
      const int ti = ri[p];
      rv[p] = up ? x : tv;
      ri[p] = up ? j : ti;
      x = up ? tv : x;
      j = up ? ti : j;
    }
  }
  int sel[RTS_K + 1];
  int m = 0;
#pragma unroll
  for (int i = 0; i < RTS_K; ++i)
    if (i < slots && ri[i] >= 0) sel[m++] = ri[i];
  if (causal) sel[m++] = (int)((r0 + my_row - s0) / B);
  for (int i = 1; i < m; ++i)  // insertion sort, m <= RTS_K + 1
    for (int p = i; p > 0 && sel[p - 1] > sel[p]; --p) { int t = sel[p]; sel[p] = sel[p - 1]; sel[p - 1] = t; }
  int* o = indices + ((r0 + my_row) * Hq + h) * topk;
  for (int i = 0; i < topk; ++i) o[i] = i < m ? sel[i] : -1;
}

#define CENTROID_SPLIT_ENTRY(N, T)                                                                \
  extern "C" __global__ void centroid_split_##N(const float* cent, T* hi, T* lo, long long n) {     \
    centroid_split<T>(cent, hi, lo, n);                                                           \
  }
#define ROUTE_TC_ENTRY(D, N, T)                                                                                   \
  extern "C" __global__ void __launch_bounds__(RTC_THREADS) route_tc_d##D##_##N(                                  \
      const T* q, const T* chi, const T* clo, int* indices, const int* cuq, const int* cu, const int* block_base, \
      const int* tile_base, int nseq, int Hq, int Hkv, int B, int topk, int causal) {                            \
    route_tc<T, D>(q, chi, clo, indices, cuq, cu, block_base, tile_base, nseq, Hq, Hkv, B, topk, causal);              \
  }
CENTROID_SPLIT_ENTRY(f16, __half)
CENTROID_SPLIT_ENTRY(bf16, __nv_bfloat16)
#define ROUTE_TCS_ENTRY(D, N, T)                                                                                  \
  extern "C" __global__ void __launch_bounds__(RTC_THREADS) route_tcs_d##D##_##N(                                 \
      const T* q, const T* chi, const T* clo, int* indices, const int* cuq, const int* cu, const int* block_base, \
      const int* tile_base, int nseq, int Hq, int Hkv, int B, int topk, int causal) {                            \
    route_tcs<T, D>(q, chi, clo, indices, cuq, cu, block_base, tile_base, nseq, Hq, Hkv, B, topk, causal);             \
  }
ROUTE_TCS_ENTRY(64, f16, __half)
ROUTE_TCS_ENTRY(64, bf16, __nv_bfloat16)
ROUTE_TCS_ENTRY(128, f16, __half)
ROUTE_TCS_ENTRY(128, bf16, __nv_bfloat16)
ROUTE_TC_ENTRY(64, f16, __half)
ROUTE_TC_ENTRY(64, bf16, __nv_bfloat16)
ROUTE_TC_ENTRY(128, f16, __half)
ROUTE_TC_ENTRY(128, bf16, __nv_bfloat16)
#endif
