/**
 * Backward launchers (SPEC §5): preprocess (lse, Δ) → dK, dV per key tile over the collected lists →
 * dQ query-major over the indices; no float atomics, so results are bitwise reproducible.
 */
/// <reference types="@webgpu/types" />
import type { ShaderSpec } from './device.js';
import { backwardDkdvWgsl } from './backward-dkdv.wgsl.js';
import { backwardDqWgsl } from './backward-dq.wgsl.js';
import { backwardPreprocessWgsl } from './backward-preprocess.wgsl.js';
import { ATTN_WG, type AttnConfig } from './forward.js';
import type { Geometry } from './geometry.js';
import type { Launch, Tiles } from './launch.js';
import type { Dims } from './route.js';

const PRE: ShaderSpec = { name: 'moba.backward-preprocess', code: backwardPreprocessWgsl, bindings: ['uniform', 'read', 'read', 'read', 'rw'] };
const DKDV: ShaderSpec = { name: 'moba.backward-dkdv', code: backwardDkdvWgsl, bindings: ['uniform', 'read', 'read', 'read', 'read', 'read', 'read', 'read', 'rw'] };
const DQ: ShaderSpec = { name: 'moba.backward-dq', code: backwardDqWgsl, bindings: ['uniform', 'read', 'read', 'read', 'read', 'read', 'read', 'read', 'rw'] };

export interface BackwardBuffers {
  readonly geom: GPUBuffer;
  readonly q: GPUBuffer;
  readonly k: GPUBuffer;
  readonly v: GPUBuffer;
  readonly out: GPUBuffer;
  readonly lse: GPUBuffer;
  readonly dOut: GPUBuffer;
  readonly indices: GPUBuffer;
  readonly collected: GPUBuffer;
  /** [T, Hq, 2] scratch: lse, Δ. */
  readonly stats: GPUBuffer;
  /** [2, T, Hkv, D]: dk then dv. */
  readonly dkv: GPUBuffer;
  readonly dq: GPUBuffer;
}

export function encodeBackward(l: Launch, geo: Geometry, dims: Dims, cfg: AttnConfig, tiles: Tiles, b: BackwardBuffers): void {
  const { T, Hq, Hkv } = dims;
  const fields = { ...dims, ...cfg, geo };
  l.add(PRE, 'main', { WG: ATTN_WG }, fields, [b.out, b.dOut, b.lse, b.stats], Math.ceil((T * Hq) / ATTN_WG));
  const kv = { WG: ATTN_WG, TR: tiles.rows, TK: tiles.keys, KVBUF: tiles.kvFloats };
  l.add(DKDV, 'main', kv, { ...fields, nItems: geo.nKTiles }, [b.geom, b.q, b.k, b.v, b.collected, b.dOut, b.stats, b.dkv], geo.nKTiles, Hkv);
  const dq = { WG: ATTN_WG, TM: tiles.rows, TN: tiles.keys, KVBUF: tiles.kvFloats };
  l.add(DQ, 'main', dq, { ...fields, nItems: geo.nQTiles }, [b.geom, b.q, b.k, b.v, b.indices, b.dOut, b.stats, b.dq], geo.nQTiles, Hq);
}
