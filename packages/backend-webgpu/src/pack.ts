/**
 * The pack pass (pack.wgsl.ts): heads of an f32 window, whose sums were carried across the passes of an
 * attention op, stored into a 16-bit output and cleared in the window.
 */
/// <reference types="@webgpu/types" />
import { type Launch, shaderVariant } from './launch.js';
import { packWgsl } from './pack.wgsl.js';
import { ATTN_WG, type PackFields, type Packer } from './shapes.js';
import type { StorageKind } from './storage.wgsl.js';

/**
 * Packs heads [hLo, hHi) of the f32 window `acc` [T, accHeads, D] into `dst` [T, Hq, D] stored as `kind`, and
 * clears them in the window.
 */
export function encodePack(l: Launch, kind: StorageKind, acc: GPUBuffer, dst: GPUBuffer, f: PackFields): void {
  const shader = shaderVariant(`moba.pack.${kind}`, ['uniform', 'rw', 'rw'], () => packWgsl(kind));
  const pass = { hLo: f.hLo, hHi: f.hHi, e0: 0, cap: 0, whole: true, groups: 0 };
  const n = f.T * (f.hHi - f.hLo) * f.D;
  l.add(shader, 'main', { WG: ATTN_WG }, { T: f.T, Hq: f.Hq, D: f.D, accHeads: f.accHeads, pass }, [acc, dst], Math.ceil(n / ATTN_WG));
}

/** The pack pass of `l` for outputs stored as `kind`, as the attention stages take it. */
export function packer(l: Launch, kind: StorageKind): Packer {
  return (acc, dst, f) => encodePack(l, kind, acc, dst, f);
}
