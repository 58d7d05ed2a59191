/**
 * Reference key convolution (SPEC §6), float64: `k'_t = k_t + SiLU(Σ_ℓ w_ℓ ⊙ k_{t−ℓ})`, depthwise over
 * the Hkv·D channels, causal, restarting at each sequence start. Weight `[C, W]` with
 * `weight[c, W−1−ℓ] = w_ℓ[c]` (PyTorch depthwise Conv1d layout).
 */
import type { Layout } from '../config.js';
import type { Round } from './forward.js';

const sigmoid = (z: number): number => 1 / (1 + Math.exp(-z));

/** The pre-activation `z[t, c] = Σ_ℓ w_ℓ[c] k[t−ℓ, c]` over `k [T, C]`. */
function conv(k: Float64Array, w: Float64Array, C: number, W: number, layout: Layout, round: Round): Float64Array {
  const cu = layout.cuSeqlens;
  const z = new Float64Array(k.length);
  for (let b = 0; b + 1 < cu.length; b++) {
    for (let t = cu[b]!; t < cu[b + 1]!; t++) {
      for (let c = 0; c < C; c++) {
        let acc = 0;
        for (let l = 0; l < W && t - l >= cu[b]!; l++) acc = round(acc + round(w[c * W + (W - 1 - l)]! * k[(t - l) * C + c]!));
        z[t * C + c] = acc;
      }
    }
  }
  return z;
}

/** `k [T, Hkv, D]` flat, `w [Hkv·D, W]` flat → `k' [T, Hkv, D]`. */
export function referenceKconv(k: Float64Array, w: Float64Array, C: number, W: number, layout: Layout, round: Round = (x) => x): Float64Array {
  const z = conv(k, w, C, W, layout, round);
  return k.map((x, i) => round(x + round(z[i]! * sigmoid(z[i]!))));
}

/** Given `dk' = ∂L/∂k'`, returns `∂L/∂k` and `∂L/∂w` (weight layout `[C, W]`). */
export function referenceKconvBackward(
  k: Float64Array, w: Float64Array, dkOut: Float64Array, C: number, W: number, layout: Layout, round: Round = (x) => x,
): { dk: Float64Array; dw: Float64Array } {
  const z = conv(k, w, C, W, layout, round);
  const dk = Float64Array.from(dkOut); // residual path
  const dw = new Float64Array(C * W);
  const cu = layout.cuSeqlens;
  for (let b = 0; b + 1 < cu.length; b++) {
    for (let t = cu[b]!; t < cu[b + 1]!; t++) {
      for (let c = 0; c < C; c++) {
        const zi = z[t * C + c]!;
        const sg = sigmoid(zi);
        const dz = round(dkOut[t * C + c]! * round(sg * (1 + zi * (1 - sg)))); // SiLU'(z) = σ(z)(1 + z(1 − σ(z)))
        for (let l = 0; l < W && t - l >= cu[b]!; l++) {
          const wi = c * W + (W - 1 - l);
          dk[(t - l) * C + c] = round(dk[(t - l) * C + c]! + round(dz * w[wi]!));
          dw[wi] = round(dw[wi]! + round(dz * k[(t - l) * C + c]!));
        }
      }
    }
  }
  return { dk, dw };
}
