// Query windows of the tensor-core forward and dQ kernels. A CTA owns one query head and a window of up
// to `BQ` consecutive rows of one sequence. Instead of searching every key block's global list for its
// rows (FlashMoBA's O(windows · blocks) scan), it inverts its own rows' routing indices in shared
// memory: count per key block -> exclusive scan -> scatter of window-local row ids. Blocks are taken
// NBR at a time (a pass), so any sequence length fits; the host picks BQ so that BQ · topk <= LIST_CAP.
#pragma once
#include "common.cuh"

namespace moba {

constexpr int LIST_CAP = 16384;  // list entries of one pass: rows of the window × topk
constexpr int NBR = 1024;       // key blocks per pass

struct WindowLists {
  int* start;             // [NBR + 1]: exclusive prefix of the per-block counts; start[NBR] = total
  int* cursor;            // [NBR]
  unsigned short* rows;   // [LIST_CAP]: window-local row ids, grouped by block
};

// The window of CTA blockIdx.x: sequence s (token range [s0, s1)) and rows [w0, w0 + nrows) (tokens).
struct Window {
  int s, s0, s1, w0, nrows;
};

__device__ __forceinline__ Window window_of(const int* cu, const int* win_base, int nseq, int BQ) {
  Window w;
  w.s = upper_index(win_base, nseq, blockIdx.x);
  w.s0 = cu[w.s];
  w.s1 = cu[w.s + 1];
  w.w0 = w.s0 + (blockIdx.x - win_base[w.s]) * BQ;
  w.nrows = min(BQ, w.s1 - w.w0);
  return w;
}

// Number of key blocks the window's rows may select: causal, up to the last row's own block.
__device__ __forceinline__ int window_blocks(const Window& w, int B, int causal) {
  return causal ? (w.w0 + w.nrows - 1 - w.s0) / B + 1 : (w.s1 - w.s0 + B - 1) / B;
}

// In-place exclusive scan of a[0..NBR), a[NBR] = total; NBR is a multiple of blockDim.x, fixed order.
__device__ void scan_counts(int* a) {
  __shared__ int warp_tot[32];
  const int per = NBR / blockDim.x, base = threadIdx.x * per, lane = threadIdx.x % WARP, warp = threadIdx.x / WARP;
  int sum = 0;
  for (int e = 0; e < per; ++e) sum += a[base + e];
  int incl = sum;
  for (int o = 1; o < WARP; o <<= 1) {
    const int y = __shfl_up_sync(0xffffffffu, incl, o);
    if (lane >= o) incl += y;
  }
  if (lane == WARP - 1) warp_tot[warp] = incl;
  __syncthreads();
  int run = incl - sum;
  for (int w = 0; w < warp; ++w) run += warp_tot[w];
  for (int e = 0; e < per; ++e) {
    const int x = a[base + e];
    a[base + e] = run;
    run += x;
  }
  if (threadIdx.x == blockDim.x - 1) a[NBR] = run;
  __syncthreads();
}

// Lists of key blocks [j0, j0 + NBR) (sequence-local) for the window's rows of head h.
__device__ void build_lists(WindowLists L, const int* indices, const Window& w, int Hq, int h, int topk, int j0) {
  __syncthreads();  // the previous pass is done with the lists
  for (int i = threadIdx.x; i < NBR; i += blockDim.x) L.start[i] = L.cursor[i] = 0;
  __syncthreads();
  const int n = w.nrows * topk;
  for (int i = threadIdx.x; i < n; i += blockDim.x) {
    const int r = i / topk;
    const int j = indices[((i64)(w.w0 + r) * Hq + h) * topk + (i - r * topk)] - j0;
    if (j >= 0 && j < NBR) atomicAdd(&L.start[j], 1);
  }
  __syncthreads();
  scan_counts(L.start);
  for (int i = threadIdx.x; i < n; i += blockDim.x) {
    const int r = i / topk;
    const int j = indices[((i64)(w.w0 + r) * Hq + h) * topk + (i - r * topk)] - j0;
    if (j >= 0 && j < NBR) L.rows[L.start[j] + atomicAdd(&L.cursor[j], 1)] = (unsigned short)r;
  }
  __syncthreads();
}

}  // namespace moba
