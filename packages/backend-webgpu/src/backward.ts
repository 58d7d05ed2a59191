/**
 * Backward launchers (SPEC §5): preprocess (lse, Δ) → per pass, dK/dV per 64-key tile over the collected
 * lists, which also stores each (entry, tile)'s dQ share → the dQ merge in slot order. No float atomics, so
 * results are bitwise reproducible. Passes exist only so that the dQ shares fit one storage binding.
 */
/// <reference types="@webgpu/types" />
import type { ShaderSpec } from './device.js';
import { backwardDkdvV1Wgsl } from './backward-dkdv-v1.wgsl.js';
import type { DkdvShape } from './backward-dkdv-shape.js';
import { backwardDkdvWgsl } from './backward-dkdv.wgsl.js';
import { backwardDqWgsl } from './backward-dq.wgsl.js';
import { backwardPreprocessWgsl } from './backward-preprocess.wgsl.js';
import { ATTN_WG, type AttnConfig, paddedD } from './forward.js';
import { CHUNK_ROWS, type CollectedLayout, type Launch, type Pass, type Tiles } from './launch.js';
import type { Dims } from './route.js';

const PRE: ShaderSpec = { name: 'moba.backward-preprocess', code: backwardPreprocessWgsl, bindings: ['uniform', 'read', 'read', 'read', 'rw'] };
const DKDV_BINDINGS = ['uniform', 'read', 'read', 'read', 'read', 'read', 'rw', 'rw', 'rw'] as const;
const dkdvShaders = new Map<string, ShaderSpec>();
const DQ: ShaderSpec = { name: 'moba.backward-dq', code: backwardDqWgsl, bindings: ['uniform', 'read', 'read', 'read', 'rw'] };
/** Rows per preprocess workgroup (backward-preprocess.wgsl.ts). */
const PRE_ROWS = 16;
/** Keys per dK/dV workgroup (backward-dkdv.wgsl.ts). */
export const DKDV_KEYS = 64;

/** Which dK/dV kernel a backward runs: 'v2' (backward-dkdv.wgsl.ts, the default) or the first one, 'v1'. */
export type DkdvKernel = 'v1' | 'v2';

function dkdvShader(name: string, code: () => string): ShaderSpec {
  let s = dkdvShaders.get(name);
  if (!s) dkdvShaders.set(name, (s = { name, code: code(), bindings: DKDV_BINDINGS }));
  return s;
}

/** The dK/dV pipeline and its override constants: the v2 shape is all template constants. */
function dkdvLaunch(tiles: Tiles, kernel: DkdvKernel): { shader: ShaderSpec; constants: Record<string, number> } {
  if (kernel === 'v1') {
    const { RW, DK, RC, VK, STAGE4 } = tiles.backward;
    return { shader: dkdvShader(`moba.backward-dkdv-v1-${tiles.oc4}x${RW}`, () => backwardDkdvV1Wgsl(tiles.oc4, RW)), constants: { DK, RC, VK, STAGE4 } };
  }
  const s: DkdvShape = tiles.dkdv;
  return { shader: dkdvShader(`moba.backward-dkdv${s.oc4}x${s.rw}-${s.dk}.${s.rc}.${s.vk}`, () => backwardDkdvWgsl(s)), constants: {} };
}

/** dQ shares per collected entry: one per 64-key sub-tile of a block. */
export function subTiles(blockSize: number): number {
  return Math.ceil(blockSize / DKDV_KEYS);
}

/** Word offset of the dQ shares in `work`: after (lse, Δ) [T, Hq, 2], on a vec4 (dqSharesOffset() in the shaders). */
export function dqSharesOffset(T: number, Hq: number): number {
  return Math.ceil((2 * T * Hq) / 4) * 4;
}

/** f32 words of `work`: (lse, Δ) [T, Hq, 2], then the dQ shares of one pass ([entry, tile, paddedD]). */
export function backwardWorkWords(dims: Dims, blockSize: number, passes: readonly Pass[]): number {
  return dqSharesOffset(dims.T, dims.Hq) + (Math.max(...passes.map((p) => p.cap)) + CHUNK_ROWS) * subTiles(blockSize) * paddedD(dims.D);
}

export interface BackwardBuffers {
  readonly q: GPUBuffer;
  readonly k: GPUBuffer;
  readonly v: GPUBuffer;
  readonly out: GPUBuffer;
  readonly lse: GPUBuffer;
  readonly dOut: GPUBuffer;
  readonly indices: GPUBuffer;
  readonly collected: GPUBuffer;
  /** (lse, Δ) [T, Hq, 2] then the dQ shares (backwardWorkWords). */
  readonly work: GPUBuffer;
  readonly dq: GPUBuffer;
  /** [T, Hkv, D] each; must be zero (fresh): every pass adds to them. */
  readonly dk: GPUBuffer;
  readonly dv: GPUBuffer;
}

export function encodeBackward(
  l: Launch, dims: Dims, cfg: AttnConfig, tiles: Tiles, lists: CollectedLayout, passes: readonly Pass[], b: BackwardBuffers,
  kernel: DkdvKernel = 'v2',
): void {
  const { T, Hq, Hkv, D } = dims;
  const fields = { ...dims, ...cfg, geo: lists.geo, lists };
  l.add(PRE, 'main', {}, fields, [b.out, b.dOut, b.lse, b.work], Math.ceil((T * Hq) / PRE_ROWS));
  const dkdv = dkdvLaunch(tiles, kernel);
  const tilesPerHead = lists.geo.totalBlocks * subTiles(cfg.blockSize);
  const group = Hq / Hkv;
  for (const pass of passes) {
    const f = { ...fields, pass };
    const kvHeads = Math.ceil(pass.hHi / group) - Math.floor(pass.hLo / group); // those of the pass's query heads
    l.add(dkdv.shader, 'main', dkdv.constants, { ...f, nItems: tilesPerHead },
      [b.q, b.k, b.v, b.dOut, b.collected, b.dk, b.dv, b.work], tilesPerHead, kvHeads);
    l.add(DQ, 'main', { WG: ATTN_WG, CM: CHUNK_ROWS }, f, [b.indices, b.collected, b.work, b.dq], Math.ceil((T * (pass.hHi - pass.hLo) * paddedD(D) / 4) / ATTN_WG));
  }
}
