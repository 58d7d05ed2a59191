/**
 * Forward launcher (forward.wgsl.ts): out [T, Hq, D] and lse [T, Hq] from q, k, v and routing indices, one
 * workgroup per (query tile, head); then outputs of f16/bf16 problems are rounded to their dtype (round.wgsl.ts).
 */
/// <reference types="@webgpu/types" />
import type { DType } from '@moba/core';
import type { ShaderSpec } from './device.js';
import type { Geometry } from './geometry.js';
import type { Launch, Tiles } from './launch.js';
import { forwardWgsl } from './forward.wgsl.js';
import { roundWgsl } from './round.wgsl.js';
import type { Dims } from './route.js';

const FORWARD: ShaderSpec = { name: 'moba.forward', code: forwardWgsl, bindings: ['uniform', 'read', 'read', 'read', 'read', 'read', 'rw', 'rw'] };
const ROUND: ShaderSpec = { name: 'moba.round', code: roundWgsl, bindings: ['uniform', 'rw'] };
export const ATTN_WG = 64;

export interface AttnConfig {
  readonly blockSize: number;
  readonly topk: number;
  readonly causal: boolean;
  readonly scale: number;
}

export function encodeForward(
  l: Launch, geo: Geometry, dims: Dims, cfg: AttnConfig, tiles: Tiles,
  b: { geom: GPUBuffer; q: GPUBuffer; k: GPUBuffer; v: GPUBuffer; indices: GPUBuffer; out: GPUBuffer; lse: GPUBuffer },
): void {
  const constants = { WG: ATTN_WG, TM: tiles.rows, TN: tiles.keys, KVBUF: tiles.kvFloats };
  l.add(FORWARD, 'main', constants, { ...dims, ...cfg, geo, nItems: geo.nQTiles }, [b.geom, b.q, b.k, b.v, b.indices, b.out, b.lse], geo.nQTiles, dims.Hq);
}

/** Rounds `n` f32 values of `buf` to `dtype` in place (nothing for f32). */
export function encodeRound(l: Launch, buf: GPUBuffer, n: number, dtype: DType): void {
  if (dtype === 'f32' || n === 0) return;
  l.add(ROUND, 'main', { WG: ATTN_WG }, { nItems: n, mode: dtype === 'f16' ? 1 : 2 }, [buf], Math.ceil(n / ATTN_WG));
}
