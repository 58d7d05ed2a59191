/**
 * Launch plumbing shared by the op launchers: the uniform `Params` words (same order as common.wgsl.ts),
 * tile sizes chosen from the device's workgroup-memory limit, and `Launch`, which collects the dispatches and
 * temporary buffers of one op, submits them as one command buffer and frees what is not kept.
 */
/// <reference types="@webgpu/types" />
import type { Geometry } from './geometry.js';
import { type Dispatch, type GpuContext, type ShaderSpec, f32bits, grid1d } from './device.js';

/** The fields of `Params` (common.wgsl.ts); unset fields are 0. */
export interface ParamFields {
  T?: number; Hq?: number; Hkv?: number; D?: number;
  blockSize?: number; topk?: number; causal?: boolean;
  nItems?: number; geo?: Geometry; scale?: number; width?: number; mode?: number;
}

function paramWords(p: ParamFields, gridX: number): number[] {
  const g = p.geo;
  const scale = p.scale ?? 0;
  return [
    p.T ?? 0, p.Hq ?? 0, p.Hkv ?? 0, p.D ?? 0,
    p.blockSize ?? 0, p.topk ?? 0, p.causal ? 1 : 0, gridX,
    p.nItems ?? 0, g?.seqsOff ?? 0, g?.rowSeqOff ?? 0, g?.qTilesOff ?? 0,
    g?.kTilesOff ?? 0, g?.blocksOff ?? 0, g?.totalBlocks ?? 0, f32bits(scale * Math.LOG2E),
    f32bits(scale), g?.nSeqs ?? 0, p.width ?? 0, p.mode ?? 0,
    0xff800000, 0x7fc00000,
  ];
}

/** Tile sizes of the attention kernels for head dim D: rows per workgroup, keys per workgroup-memory tile. */
export interface Tiles {
  /** Query rows per workgroup (forward, dq) and rows per chunk (dk/dv). */
  readonly rows: number;
  /** Keys per tile; K and V tiles of `keys × D` f32 each fit the workgroup memory with the score tiles. */
  readonly keys: number;
  /** Centroids per routing tile. */
  readonly centroids: number;
  /** Floats of each K/V workgroup tile (`keys × Dc`) and of the centroid tile (`centroids × Dc`). */
  readonly kvFloats: number;
  readonly centroidFloats: number;
}

/**
 * Tile sizes for head dim D. The workgroup arrays are sized for Dc = max(64, next power of two ≥ D), not for
 * D itself, so that every D ≤ 64 shares one set of pipelines (and D ≤ 256 at most three more): each distinct
 * override value is a separate shader compilation, which costs about a second on a software adapter.
 */
export function chooseTiles(limits: GPUSupportedLimits, D: number): Tiles {
  const bytes = limits.maxComputeWorkgroupStorageSize;
  const Dc = Math.max(64, 2 ** Math.ceil(Math.log2(Math.max(1, D))));
  const fixed = 2 * 1024 * 4 + 7 * 64 * 4 + 4; // score tiles and per-row state (fixed-size arrays in the shaders)
  let keys = 32;
  while (keys > 1 && 2 * keys * Dc * 4 + fixed > bytes) keys >>= 1;
  let centroids = 64;
  while (centroids > 1 && centroids * Dc * 4 > bytes / 2) centroids >>= 1;
  return { rows: 16, keys, centroids, kvFloats: keys * Dc, centroidFloats: centroids * Dc };
}

/** The dispatches and temporaries of one op. */
export class Launch {
  readonly #ctx: GpuContext;
  readonly #dispatches: Dispatch[] = [];
  readonly #temps: GPUBuffer[] = [];

  constructor(ctx: GpuContext) {
    this.#ctx = ctx;
  }

  /** A buffer freed after the submission unless passed to `keep`. */
  temp(label: string, bytes: number): GPUBuffer {
    const b = this.#ctx.buffer(label, bytes);
    this.#temps.push(b);
    return b;
  }

  tempData(label: string, data: ArrayBufferView): GPUBuffer {
    const b = this.#ctx.upload(label, data);
    this.#temps.push(b);
    return b;
  }

  /** Removes buffers from the temporaries (results handed to the caller). */
  keep(...bufs: GPUBuffer[]): void {
    for (const b of bufs) {
      const i = this.#temps.indexOf(b);
      if (i >= 0) this.#temps.splice(i, 1);
    }
  }

  /** Adds `groups` workgroups (folded into x, y) times `z` of `entry`; binding 0 gets the Params. */
  add(shader: ShaderSpec, entry: string, constants: Record<string, number>, fields: ParamFields, buffers: GPUBuffer[], groups: number, z = 1): void {
    const [x, y] = grid1d(groups, this.#ctx.limits.maxComputeWorkgroupsPerDimension);
    const u = this.#ctx.uniforms(`${shader.name}.${entry} params`, paramWords(fields, x));
    this.#temps.push(u);
    this.#dispatches.push({ pipeline: this.#ctx.pipeline(shader, entry, constants), buffers: [u, ...buffers], grid: [x, y, z] });
  }

  /** Adds a copy of `bytes` from `src` at `srcOffset` to the start of `dst`. */
  copy(src: GPUBuffer, srcOffset: number, dst: GPUBuffer, bytes: number): void {
    this.#dispatches.push({ copy: { src, srcOffset, dst, bytes } });
  }

  /** Submits everything as one command buffer, then frees the temporaries (also on failure). */
  async submit(label: string): Promise<void> {
    try {
      if (this.#dispatches.length > 0) await this.#ctx.run(label, this.#dispatches);
    } finally {
      this.#ctx.free(...this.#temps);
      this.#temps.length = 0;
    }
  }

  /** Frees everything, kept or not (for a failure after `keep`). */
  discard(...bufs: GPUBuffer[]): void {
    this.#ctx.free(...bufs);
  }
}
