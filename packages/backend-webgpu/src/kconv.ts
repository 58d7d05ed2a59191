/**
 * kconv launchers (SPEC §6): forward k' [T, Hkv, D], backward dk [T, Hkv, D] and dw [Hkv·D, W]
 * (kconv.wgsl.ts). Channels C = Hkv·D are flat; taps stop at sequence boundaries.
 */
/// <reference types="@webgpu/types" />
import type { GpuContext, ShaderSpec } from './device.js';
import type { Geometry } from './geometry.js';
import type { Launch } from './launch.js';
import { kconvWgsl } from './kconv.wgsl.js';

const SHADER: ShaderSpec = { name: 'moba.kconv', code: kconvWgsl, bindings: ['uniform', 'read', 'read', 'read', 'read', 'rw', 'rw', 'rw'] };
const WG = 64;

export interface KconvBuffers {
  readonly geom: GPUBuffer;
  readonly k: GPUBuffer;  // [T, C]
  readonly w: GPUBuffer;  // [C, W]
}

/** k' = k + SiLU(conv(k)) into `out` [T, C]. */
export function encodeKconv(l: Launch, ctx: GpuContext, geo: Geometry, T: number, C: number, W: number, b: KconvBuffers, out: GPUBuffer): void {
  const fields = { T, D: C, width: W, geo };
  l.add(SHADER, 'forward', { WG }, fields, [b.geom, b.k, b.w, ctx.placeholder('read'), ctx.placeholder('rw', 5), out, ctx.placeholder('rw', 7)], Math.ceil((T * C) / WG));
}

/** dz (scratch [T, C]) → dk [T, C] and dw [C, W] from the upstream gradient `dkOut`. */
export function encodeKconvBackward(
  l: Launch, ctx: GpuContext, geo: Geometry, T: number, C: number, W: number, b: KconvBuffers,
  dkOut: GPUBuffer, dz: GPUBuffer, dk: GPUBuffer, dw: GPUBuffer,
): void {
  const fields = { T, D: C, width: W, geo };
  const [rw6, rw7] = [ctx.placeholder('rw', 6), ctx.placeholder('rw', 7)]; // writable bindings must not alias
  const groups = Math.ceil((T * C) / WG);
  l.add(SHADER, 'backwardDz', { WG }, fields, [b.geom, b.k, b.w, dkOut, dz, rw6, rw7], groups);
  l.add(SHADER, 'backwardDk', { WG }, fields, [b.geom, b.k, b.w, dkOut, dz, dk, rw7], groups);
  l.add(SHADER, 'backwardDw', { WG }, fields, [b.geom, b.k, b.w, dkOut, dz, rw6, dw], C * W);
}
