/**
 * `moba analyze --synthetic gaussian`: seeded standard-normal q, k, v `[T, H, D]` with planted retrieval structure,
 * so recall depends on the routing rather than being the attended fraction of noise.
 *
 * What is planted, per head: `needles` key positions p_j (uniform over the sequence), each key replaced by c · u_j
 * (u_j a random unit vector, c = sqrt(gap · sqrt(D))); then every query row t that has a needle strictly before it
 * retrieves, with probability 1/2, one of those needles chosen uniformly: q_t += a · u_j with a = c. The scaled score
 * of that needle is then about a · c / sqrt(D) = `gap` above the noise (the other scores are ~N(0, 1 + a²/D)), so the
 * needle holds most of the row's dense softmax mass, and the router finds its block when the block centroid's
 * score (a · c / B above noise of std ~sqrt((D + a²) / B)) stands out among the other blocks: better with small B.
 */
import { type HostTensor, Rng, hostTensor } from '@moba/core';

export interface SyntheticOptions {
  readonly tokens: number;
  readonly heads: number;
  readonly headDim: number;
  readonly seed: number;
  /** Planted needle keys per head (default 64). */
  readonly needles?: number;
  /** Score gap of a retrieved needle in scaled-score units (default 24). */
  readonly gap?: number;
}

export const SYNTHETIC_GAP = 24;
export const SYNTHETIC_NEEDLES = 64;

/** q, k, v `[T, H, D]` f32 (see the module doc for what is planted). */
export function syntheticGaussian(o: SyntheticOptions): { q: HostTensor<'f32'>; k: HostTensor<'f32'>; v: HostTensor<'f32'> } {
  const { tokens: T, heads: H, headDim: D } = o;
  const rng = new Rng(o.seed);
  const q = rng.normals(T * H * D);
  const k = rng.normals(T * H * D);
  const v = rng.normals(T * H * D);
  const c = Math.sqrt((o.gap ?? SYNTHETIC_GAP) * Math.sqrt(D));
  const n = Math.min(T, o.needles ?? SYNTHETIC_NEEDLES);
  for (let h = 0; h < H; h++) {
    const pos = Array.from({ length: n }, () => rng.int(0, T - 1)).sort((x, y) => x - y);
    const dirs = pos.map((p) => {
      const u = rng.normals(D);
      const norm = Math.hypot(...u);
      for (let d = 0; d < D; d++) {
        u[d]! /= norm;
        k[(p * H + h) * D + d] = c * u[d]!;
      }
      return u;
    });
    let before = 0; // needles at positions < t
    for (let t = 0; t < T; t++) {
      while (before < n && pos[before]! < t) before++;
      if (before === 0 || rng.next() >= 0.5) continue;
      const u = dirs[rng.int(0, before - 1)]!;
      for (let d = 0; d < D; d++) q[(t * H + h) * D + d]! += c * u[d]!;
    }
  }
  return { q: hostTensor('f32', [T, H, D], q), k: hostTensor('f32', [T, H, D], k), v: hostTensor('f32', [T, H, D], v) };
}
