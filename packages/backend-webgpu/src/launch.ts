/**
 * Launch plumbing shared by the op launchers: the uniform `Params` words (same order as common.wgsl.ts),
 * tile sizes chosen from the device's workgroup-memory limit, and `Launch`, which collects the dispatches and
 * temporary buffers of one op, submits them as one command buffer and frees what is not kept.
 */
/// <reference types="@webgpu/types" />
import { type DkdvShape, dkdvShape, withDkdv } from './backward-dkdv-shape.js';
import { type Dispatch, type GpuContext, f32bits, grid1d } from './device.js';
import type { Geometry } from './geometry.js';
import type { ShaderSpec } from './pipelines.js';
import type { CollectedLayout, Pass } from './shapes.js';

/** The fields of `Params` (common.wgsl.ts); unset fields are 0. */
export interface ParamFields {
  T?: number; Hq?: number; Hkv?: number; D?: number;
  blockSize?: number; topk?: number; causal?: boolean;
  nItems?: number; geo?: Geometry; scale?: number; width?: number; mode?: number;
  lists?: CollectedLayout; pass?: Pass;
  /** Heads of an f32 accumulation window (accIndex in common.wgsl.ts). */
  accHeads?: number;
}

function paramWords(p: ParamFields, gridX: number): number[] {
  const g = p.geo;
  const scale = p.scale ?? 0;
  return [
    p.T ?? 0, p.Hq ?? 0, p.Hkv ?? 0, p.D ?? 0,
    p.blockSize ?? 0, p.topk ?? 0, p.causal ? 1 : 0, gridX,
    p.nItems ?? 0, g?.seqsOff ?? 0, g?.rowSeqOff ?? 0, g?.qTilesOff ?? 0,
    g?.blocksOff ?? 0, g?.totalBlocks ?? 0, f32bits(scale * Math.LOG2E),
    f32bits(scale), g?.nSeqs ?? 0, p.width ?? 0, p.mode ?? 0,
    0xff800000, 0x7fc00000, p.lists?.nLists ?? 0, p.lists?.maxEntries ?? 0,
    p.lists?.rowsOff ?? 0, p.lists?.entryOfOff ?? 0, p.lists?.chunksOff ?? 0, p.lists?.chunkOffOff ?? 0,
    p.pass?.e0 ?? 0, p.pass?.cap ?? 0, p.pass?.hLo ?? 0, p.pass?.hHi ?? 0,
    p.pass?.whole ? 1 : 0, p.accHeads ?? 0, g?.qShiftOff ?? 0,
  ];
}

/** Tiles of the forward chunk kernel (forward.wgsl.ts): 64 rows × 64 keys, staging steps sized to the memory. */
export interface ForwardTiles {
  /** Head dims per S staging step, keys per V staging step, keys of P held at once, staging vec4s. */
  readonly DK: number;
  readonly VK: number;
  readonly PH: number;
  readonly STAGE4: number;
}

/** Tiles of the routing top-k kernels, 64 rows × 64 centroids: single-owner (route.wgsl.ts) and `split`. */
export interface RouteTiles {
  /** Head dims per S staging step, centroids of S in workgroup memory at once, staging vec4s. */
  readonly DK: number;
  readonly SH: number;
  readonly STAGE4: number;
  /**
   * route-split.wgsl.ts: Q dims resident in workgroup memory (Dc, or 0: Q staged with C), head dims per C
   * staging step, staging vec4s, list entries per merge pass.
   */
  readonly split: { readonly QD: number; readonly DK: number; readonly STAGE4: number; readonly MS: number };
}

/** Tile sizes of all kernels for head dim D. */
export interface Tiles {
  readonly route: RouteTiles;
  /** D padded to a power of two ≥ 64 (the attention tiles' head dim), and Dc / 64. */
  readonly dc: number;
  readonly oc4: number;
  readonly forward: ForwardTiles;
  /** The dK/dV kernel's shape (backward-dkdv-shape.ts). */
  readonly dkdv: DkdvShape;
}

const F32 = 4;

/** Margin for an implementation's own use of workgroup memory (alignment padding). */
const SLACK = 64;

/** Workgroup bytes of the forward kernel: stage, ps, red, rowIds, rowBad, keyBad, chunk (forward.wgsl.ts). */
export function forwardBytes(t: ForwardTiles): number {
  return F32 * (4 * t.STAGE4 + 64 * t.PH + 1024 + 3 * 64) + 16 + SLACK;
}

/** Workgroup bytes of the routing top-k kernel: stage, sS (route.wgsl.ts). */
export function routeBytes(t: RouteTiles): number {
  return F32 * (4 * t.STAGE4 + 64 * t.SH) + SLACK;
}

/** Workgroup bytes of the split top-k kernel: stage, mV, mI (route-split.wgsl.ts). */
export function routeSplitBytes(t: RouteTiles['split']): number {
  return 4 * F32 * t.STAGE4 + 2 * F32 * 256 * t.MS + SLACK;
}

/** Q resident (all Dc dims staged once) when it fits with C in steps of ≥ 16 dims, else Q staged with C. */
function routeSplitTiles(dc: number, bytes: number): RouteTiles['split'] {
  for (const QD of [dc, 0]) {
    for (const DK of QD > 0 ? [32, 16] : [32, 16, 8, 4]) {
      for (const MS of [8, 4, 2]) {
        const t = { QD, DK, STAGE4: ((QD || DK) + DK) * 17, MS }; // 17: vec4s per dim (64 rows + padding)
        if (routeSplitBytes(t) <= bytes) return t;
      }
    }
  }
  throw new Error(`no split routing tiles fit ${bytes} bytes of workgroup memory`);
}

function routeTiles(dc: number, bytes: number): RouteTiles {
  const split = routeSplitTiles(dc, bytes);
  for (const SH of [64, 32, 16]) {
    for (const DK of [16, 8, 4]) {
      const t = { DK, SH, STAGE4: DK * 32, split };
      if (routeBytes(t) <= bytes) return t;
    }
  }
  throw new Error(`no routing tiles fit ${bytes} bytes of workgroup memory`);
}

function floorPow2(x: number): number {
  return x < 1 ? 0 : 2 ** Math.floor(Math.log2(x));
}

function forwardTiles(dc: number, bytes: number): ForwardTiles {
  for (const PH of [64, 32, 16]) {
    for (const DK of [32, 16, 8, 4, 2]) {
      const floats = DK * 128; // Q [DK][64] and K [DK][64]
      const VK = Math.min(PH, floorPow2(floats / dc));
      if (VK < 1) continue;
      const t = { DK, VK, PH, STAGE4: Math.max(floats, VK * dc) / 4 };
      if (forwardBytes(t) <= bytes) return t;
    }
  }
  throw new Error(`no forward tiles fit ${bytes} bytes of workgroup memory`);
}

/**
 * Tile sizes for head dim D within `bytes` of workgroup memory (default: the device's limit). The attention
 * tiles are sized for Dc = max(64, next power of two ≥ D), not for D itself, so that every D ≤ 64 shares one
 * set of pipelines (and D ≤ 256 at most two more): each distinct shader or override value is a separate
 * compilation, which costs about a second on a software adapter.
 */
export function chooseTiles(
  limits: GPUSupportedLimits, D: number, bytes = limits.maxComputeWorkgroupStorageSize, dkdv: Partial<DkdvShape> = {},
): Tiles {
  bytes = Math.min(bytes, limits.maxComputeWorkgroupStorageSize);
  const dc = Math.max(64, 2 ** Math.ceil(Math.log2(Math.max(1, D))));
  return {
    route: routeTiles(dc, bytes), dc, oc4: dc / 64, forward: forwardTiles(dc, bytes),
    dkdv: withDkdv(dkdvShape(dc, bytes), dkdv, bytes),
  };
}

const variants = new Map<string, ShaderSpec>();

/**
 * The shader `name` (one per variant: tile constants baked in, storage kinds), its code made on first use.
 * Pipelines are cached per device by this name (pipelines.ts).
 */
export function shaderVariant(name: string, bindings: ShaderSpec['bindings'], code: () => string): ShaderSpec {
  let s = variants.get(name);
  if (!s) variants.set(name, (s = { name, code: code(), bindings }));
  return s;
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
    const b = this.#ctx.buffers.buffer(label, bytes, undefined, true);
    this.#temps.push(b);
    return b;
  }

  /** Writes `data` into `buf` at byte `offset` (queued before this launch's submission). */
  write(buf: GPUBuffer, offset: number, data: ArrayBufferView): void {
    this.#ctx.device.queue.writeBuffer(buf, offset, data.buffer, data.byteOffset, data.byteLength);
  }

  tempData(label: string, data: ArrayBufferView): GPUBuffer {
    const b = this.#ctx.buffers.upload(label, data, undefined, true);
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
    const u = this.#ctx.buffers.uniforms(`${shader.name}.${entry} params`, paramWords(fields, x));
    this.#temps.push(u);
    this.#dispatches.push({ pipeline: this.#ctx.pipeline(shader, entry, constants), buffers: [u, ...buffers], grid: [x, y, z] });
  }

  /** Submits everything as one command buffer, then frees the temporaries (also on failure). */
  async submit(label: string): Promise<void> {
    try {
      if (this.#dispatches.length > 0) await this.#ctx.run(label, this.#dispatches);
    } finally {
      this.#ctx.buffers.free(...this.#temps);
      this.#temps.length = 0;
    }
  }

  /** Frees everything, kept or not (for a failure after `keep`). */
  discard(...bufs: GPUBuffer[]): void {
    this.#ctx.buffers.free(...bufs);
  }
}
