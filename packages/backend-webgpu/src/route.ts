/**
 * Routing launcher: centroids → fused tiled top-k (route.wgsl.ts, route-split.wgsl.ts) producing indices
 * [T, Hq, topk]. The routing is then collected (collect.ts).
 */
/// <reference types="@webgpu/types" />
import type { Geometry } from './geometry.js';
import { type Launch, type Tiles, shaderVariant } from './launch.js';
import { SPLIT_CAPACITIES, routeSplitWgsl } from './route-split.wgsl.js';
import { routeWgsl } from './route.wgsl.js';
import { type Dims, F32 } from './shapes.js';
import type { StorageKind } from './storage.wgsl.js';

const ROUTE_BINDINGS = ['uniform', 'read', 'read', 'read', 'rw', 'rw'] as const;

/**
 * The routing top-k kernel: `split` (route-split.wgsl.ts: every invocation keeps private top-k lists, merged at
 * the end; used when at most 16 slots compete) or `owner` (route.wgsl.ts: one invocation per row merges the
 * row's candidates; any topk). Both give bitwise the same indices.
 */
export type RouteKernel = 'split' | 'owner';

/**
 * The default routing kernel of a device: `owner` on SwiftShader (Chromium's software adapter loses the device
 * on the split shader, unrolled or not), else `split`.
 */
export function defaultRouteKernel(device: GPUDevice): RouteKernel {
  const info = (device as GPUDevice & { adapterInfo?: GPUAdapterInfo }).adapterInfo;
  return info?.architecture === 'swiftshader' || /swiftshader/i.test(info?.description ?? '') ? 'owner' : 'split';
}

/** Query rows per routing workgroup (route.wgsl.ts: one owner invocation per row). */
export const ROUTE_ROWS = 64;

/** The buffers of route: geometry, centroids, indices. */
export function routeBytes(s: Dims, topk: number, geo: Geometry): Record<string, number> {
  return { geometry: geo.words.byteLength, centroids: geo.totalBlocks * s.Hkv * s.D * F32, indices: s.T * s.Hq * topk * 4 };
}

/** Centroids [totalBlocks, Hkv, D] into `cent`, then each row's selection into `indices` [T, Hq, topk]; q, k stored as `kind`. */
export function encodeRoute(
  l: Launch, geo: Geometry, dims: Dims, kind: StorageKind, cfg: { blockSize: number; topk: number; causal: boolean }, tiles: Tiles,
  b: { geom: GPUBuffer; q: GPUBuffer; k: GPUBuffer; cent: GPUBuffer; indices: GPUBuffer }, kernel: RouteKernel = 'split',
): void {
  const { T, Hq, Hkv, D } = dims;
  const constants = { TM: ROUTE_ROWS };
  const fields = { T, Hq, Hkv, D, ...cfg, geo };
  const bufs = [b.geom, b.q, b.k, b.cent, b.indices];
  const ROUTE = shaderVariant(`moba.route.${kind}`, ROUTE_BINDINGS, () => routeWgsl(kind));
  l.add(ROUTE, 'centroids', constants, fields, bufs, Math.ceil((geo.totalBlocks * Hkv * D) / ROUTE_ROWS));
  const slots = cfg.causal ? cfg.topk - 1 : cfg.topk; // competing slots (causal: the own block is forced)
  const kp = SPLIT_CAPACITIES.find((c) => c >= slots);
  const split = kernel === 'split' && kp !== undefined
    ? shaderVariant(`moba.route-split.k${kp}.${kind}`, ROUTE_BINDINGS, () => routeSplitWgsl(kp, kind)) : undefined;
  if (split) l.add(split, 'topkSplit', { ...tiles.route.split }, { ...fields, nItems: geo.nQTiles }, bufs, geo.nQTiles, Hq);
  else l.add(ROUTE, 'topk', { DK: tiles.route.DK, SH: tiles.route.SH, STAGE4: tiles.route.STAGE4 }, { ...fields, nItems: geo.nQTiles }, bufs, geo.nQTiles, Hq);
}
