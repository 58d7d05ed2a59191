// Forward (SPEC §4): one warp per (query row t, head h); 4 warps per CTA own neighbouring rows of the
// same head, so they share most selected blocks in L1/L2. The warp walks the row's selected blocks in
// chunks of 32 keys: lane j scores key j against the row (q staged in shared memory, pre-scaled by
// scale * log2 e), then the chunk updates the online-softmax state (running max m, sum l) and every
// lane's slice of the f32 accumulator (dims lane, lane + 32, ...). The own block stops at key t when
// causal. Epilogue: out = acc / l, lse = (m + log2 l) * ln 2; a row with no keys gives 0 and -inf.
#include "common.cuh"
using namespace moba;

constexpr int FWD_WARPS = 4;
constexpr int MAX_DPL = 8;  // dims per lane: D <= 256

template <typename T>
__device__ void forward(const T* q, const T* k, const T* v, const int* indices, T* out, float* lse, const int* cu, int nseq,
                        int T_, int Hq, int Hkv, int D, int B, int topk, int causal, float scale) {
  extern __shared__ float sq_all[];  // [FWD_WARPS][D]
  const int lane = threadIdx.x % WARP, warp = threadIdx.x / WARP;
  float* sq = sq_all + warp * D;
  const i64 nrows = (i64)T_ * Hq;
  for (i64 row = (i64)blockIdx.x * FWD_WARPS + warp; row < nrows; row += (i64)gridDim.x * FWD_WARPS) {
    const int h = (int)(row / T_), t = (int)(row - (i64)h * T_), kvh = h / (Hq / Hkv);
    const int s = upper_index(cu, nseq, t);
    const int s0 = cu[s], s1 = cu[s + 1], cb = (t - s0) / B;
    const float qs = scale * LOG2E;
    __syncwarp();
    for (int d = lane; d < D; d += WARP) sq[d] = ld(q, ((i64)t * Hq + h) * D + d) * qs;
    __syncwarp();
    float m = -INFINITY, l = 0.f, acc[MAX_DPL];
    bool nan_row = false;  // a NaN score makes the whole row NaN (SPEC §7), as in the reference
    for (int r = 0; r < MAX_DPL; ++r) acc[r] = 0.f;
    const int* sel = indices + ((i64)t * Hq + h) * topk;
    for (int i = 0; i < topk; ++i) {
      const int j = sel[i];
      if (j < 0) break;
      const int p0 = s0 + j * B;
      const int p1 = (causal && j == cb) ? t + 1 : min(p0 + B, s1);
      for (int pc = p0; pc < p1; pc += WARP) {
        const int p = pc + lane, n = min(WARP, p1 - pc);
        float x = -INFINITY;
        if (lane < n) {
          const T* kp = k + ((i64)p * Hkv + kvh) * D;
          x = 0.f;
          for (int d = 0; d < D; ++d) x += sq[d] * ld(kp, d);
        }
        nan_row |= __any_sync(0xffffffffu, x != x);
        const float mc = warp_max(x);
        const float mn = fmaxf(m, mc);
        if (mn == -INFINITY) continue;  // nothing finite yet (keys of -inf score)
        const float alpha = exp2f(m - mn);  // m = -inf on the first chunk: 0
        const float pr = lane < n ? exp2f(x - mn) : 0.f;
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
    if (lane == 0) lse[(i64)t * Hq + h] = l > 0.f ? (m + log2f(l)) * LN2 : (l == 0.f ? -INFINITY : NAN);
  }
}

#define FORWARD_ENTRY(N, T)                                                                                    \
  extern "C" __global__ void __launch_bounds__(FWD_WARPS * WARP) forward_##N(                                  \
      const T* q, const T* k, const T* v, const int* indices, T* out, float* lse, const int* cu, int nseq,     \
      int T_, int Hq, int Hkv, int D, int B, int topk, int causal, float scale) {                               \
    forward<T>(q, k, v, indices, out, lse, cu, nseq, T_, Hq, Hkv, D, B, topk, causal, scale);                  \
  }
MOBA_DTYPES(FORWARD_ENTRY)
