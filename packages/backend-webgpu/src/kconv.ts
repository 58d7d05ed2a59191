/**
 * kconv launchers (SPEC §6): forward k' [T, Hkv, D], backward dk [T, Hkv, D] and dw [Hkv·D, W]
 * (kconv.wgsl.ts). Channels C = Hkv·D are flat; taps stop at sequence boundaries. k, dkOut, k' and dk are
 * stored as k's dtype, w and dw as w's (storage.wgsl.ts); the scratch dz is f32.
 */
/// <reference types="@webgpu/types" />
import { type CheckedKconv, type Layout, sequences } from '@moba/core';
import type { GpuContext } from './device.js';
import { type Geometry, buildGeometry } from './geometry.js';
import { type Launch, shaderVariant } from './launch.js';
import { kconvWgsl } from './kconv.wgsl.js';
import type { ShaderSpec } from './pipelines.js';
import { F32 } from './shapes.js';
import { type StorageKind, storageBytes } from './storage.wgsl.js';

const BINDINGS = ['uniform', 'read', 'read', 'read', 'read', 'rw', 'rw', 'rw'] as const;
const WG = 64;

export interface KconvBuffers {
  readonly geom: GPUBuffer;
  readonly k: GPUBuffer;  // [T, C]
  readonly w: GPUBuffer;  // [C, W]
  /** Storage of k (and dkOut, k', dk) and of w (and dw). */
  readonly kind: StorageKind;
  readonly wKind: StorageKind;
}

/**
 * The geometry of a kconv call (one block and one tile per sequence: kconv only needs sequence bounds), the
 * bytes of its buffers (forward; backward), and its whole workspace (the backward's: dkOut, dk, dz, w, dw) for checkWorkspace.
 */
export function kconvPlan(p: CheckedKconv, layout: Layout) {
  const { T, C, W } = p;
  const whole = Math.max(1, T);
  const geo = buildGeometry(sequences(layout, whole), T, whole, whole);
  const bytes = { 'kconv out': storageBytes(T * C, p.dtype), geometry: geo.words.byteLength };
  const backwardBytes = { ...bytes, 'kconv dz': T * C * F32, 'kconv dw': storageBytes(C * W, p.wDtype) };
  const workspace = 2 * bytes['kconv out'] + backwardBytes['kconv dz'] + 2 * backwardBytes['kconv dw'];
  return { geo, bytes, backwardBytes, workspace };
}

function shader(b: KconvBuffers): ShaderSpec {
  return shaderVariant(`moba.kconv.${b.kind}.${b.wKind}`, BINDINGS, () => kconvWgsl(b.kind, b.wKind));
}

/** k' = k + SiLU(conv(k)) into `out` [T, C]. */
export function encodeKconv(l: Launch, ctx: GpuContext, geo: Geometry, T: number, C: number, W: number, b: KconvBuffers, out: GPUBuffer): void {
  const fields = { T, D: C, width: W, geo };
  const pairs = Math.ceil((T * C) / 2); // two elements (one storage word) per invocation
  l.add(shader(b), 'forward', { WG }, fields, [b.geom, b.k, b.w, ctx.buffers.placeholder('read'), ctx.buffers.placeholder('rw', 5), out, ctx.buffers.placeholder('rw', 7)], Math.ceil(pairs / WG));
}

/** dz (scratch [T, C]) → dk [T, C] and dw [C, W] from the upstream gradient `dkOut`. */
export function encodeKconvBackward(
  l: Launch, ctx: GpuContext, geo: Geometry, T: number, C: number, W: number, b: KconvBuffers,
  dkOut: GPUBuffer, dz: GPUBuffer, dk: GPUBuffer, dw: GPUBuffer,
): void {
  const fields = { T, D: C, width: W, geo };
  const [rw6, rw7] = [ctx.buffers.placeholder('rw', 6), ctx.buffers.placeholder('rw', 7)]; // writable bindings must not alias
  const groups = Math.ceil((T * C) / WG);
  const s = shader(b);
  l.add(s, 'backwardDz', { WG }, fields, [b.geom, b.k, b.w, dkOut, dz, rw6, rw7], groups);
  l.add(s, 'backwardDk', { WG }, fields, [b.geom, b.k, b.w, dkOut, dz, dk, rw7], Math.ceil(Math.ceil((T * C) / 2) / WG));
  l.add(s, 'backwardDw', { WG }, fields, [b.geom, b.k, b.w, dkOut, dz, rw6, dw], C * W);
}
