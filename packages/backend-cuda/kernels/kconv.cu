// Key convolution (SPEC §6): k'[t,c] = k[t,c] + SiLU(z[t,c]), z[t,c] = sum_l w[c, W-1-l] * k[t-l, c],
// depthwise over the C = Hkv*D channels, causal, taps before the sequence start read zero.
// Forward: one thread per (t, c). Backward: dz = dk' * SiLU'(z) (f32 scratch), then dk per (t, c)
// and dw per (c, l) as a fixed-order block reduction over t (deterministic, no atomics).
#include "common.cuh"
using namespace moba;

template <typename T>
__device__ __forceinline__ float conv_z(const T* k, const T* w, i64 t, i64 s0, int c, int C, int W) {
  float z = 0.f;
  for (int l = 0; l < W && t - l >= s0; ++l) z += ld(w, (i64)c * W + (W - 1 - l)) * ld(k, (t - l) * C + c);
  return z;
}

template <typename T>
__device__ void kconv_forward(const T* k, const T* w, T* out, const int* cu, int nseq, i64 T_, int C, int W) {
  for (i64 e = blockIdx.x * (i64)blockDim.x + threadIdx.x; e < T_ * C; e += (i64)gridDim.x * blockDim.x) {
    i64 t = e / C;
    int c = (int)(e - t * C);
    i64 s0 = cu[upper_index(cu, nseq, t)];
    float z = conv_z(k, w, t, s0, c, C, W);
    st(out, e, ld(k, e) + z / (1.f + expf(-z)));
  }
}

template <typename T>
__device__ void kconv_dz(const T* k, const T* w, const T* dkout, float* dz, const int* cu, int nseq, i64 T_, int C, int W) {
  for (i64 e = blockIdx.x * (i64)blockDim.x + threadIdx.x; e < T_ * C; e += (i64)gridDim.x * blockDim.x) {
    i64 t = e / C;
    int c = (int)(e - t * C);
    i64 s0 = cu[upper_index(cu, nseq, t)];
    float z = conv_z(k, w, t, s0, c, C, W);
    float sg = 1.f / (1.f + expf(-z));
    dz[e] = ld(dkout, e) * (sg * (1.f + z * (1.f - sg)));  // SiLU'(z)
  }
}

template <typename T>
__device__ void kconv_dk(const T* w, const T* dkout, const float* dz, T* dk, const int* cu, int nseq, i64 T_, int C, int W) {
  for (i64 e = blockIdx.x * (i64)blockDim.x + threadIdx.x; e < T_ * C; e += (i64)gridDim.x * blockDim.x) {
    i64 t = e / C;
    int c = (int)(e - t * C);
    i64 s1 = cu[upper_index(cu, nseq, t) + 1];
    float g = ld(dkout, e);  // residual path
    for (int l = 0; l < W && t + l < s1; ++l) g += dz[(t + l) * C + c] * ld(w, (i64)c * W + (W - 1 - l));
    st(dk, e, g);
  }
}

// One block (256 threads) per channel c: dw[c, W-1-l] = sum_t dz[t,c] * k[t-l,c] over t - l >= start of t's sequence.
template <typename T>
__device__ void kconv_dw(const T* k, const float* dz, T* dw, const int* cu, int nseq, i64 T_, int C, int W) {
  __shared__ float red[256];
  for (int c = blockIdx.x; c < C; c += gridDim.x) {
    for (int l = 0; l < W; ++l) {
      float acc = 0.f;
      for (i64 t = threadIdx.x; t < T_; t += blockDim.x) {
        i64 s0 = cu[upper_index(cu, nseq, t)];
        if (t - l >= s0) acc += dz[t * C + c] * ld(k, (t - l) * C + c);
      }
      red[threadIdx.x] = acc;
      __syncthreads();
      for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if ((int)threadIdx.x < s) red[threadIdx.x] += red[threadIdx.x + s];
        __syncthreads();
      }
      if (threadIdx.x == 0) st(dw, (i64)c * W + (W - 1 - l), red[0]);
      __syncthreads();
    }
  }
}

#define KCONV_ENTRIES(N, T)                                                                                       \
  extern "C" __global__ void kconv_forward_##N(const T* k, const T* w, T* out, const int* cu, int nseq, i64 T_, int C, int W) { \
    kconv_forward<T>(k, w, out, cu, nseq, T_, C, W);                                                               \
  }                                                                                                                \
  extern "C" __global__ void kconv_dz_##N(const T* k, const T* w, const T* dkout, float* dz, const int* cu, int nseq, i64 T_, int C, int W) { \
    kconv_dz<T>(k, w, dkout, dz, cu, nseq, T_, C, W);                                                              \
  }                                                                                                                \
  extern "C" __global__ void kconv_dk_##N(const T* w, const T* dkout, const float* dz, T* dk, const int* cu, int nseq, i64 T_, int C, int W) { \
    kconv_dk<T>(w, dkout, dz, dk, cu, nseq, T_, C, W);                                                             \
  }                                                                                                                \
  extern "C" __global__ void __launch_bounds__(256) kconv_dw_##N(const T* k, const float* dz, T* dw, const int* cu, int nseq, i64 T_, int C, int W) { \
    kconv_dw<T>(k, dz, dw, cu, nseq, T_, C, W);                                                                    \
  }
MOBA_DTYPES(KCONV_ENTRIES)
