/**
 * Routing launchers: centroids → fused tiled top-k (route.wgsl.ts) producing indices [T, Hq, topk], and
 * collect (collect.wgsl.ts) producing the key-block-major lists the forward and backward walk.
 */
/// <reference types="@webgpu/types" />
import type { ShaderSpec } from './device.js';
import type { Geometry } from './geometry.js';
import { CHUNK_ROWS, type CollectedLayout, type Launch, type Tiles, shaderVariant } from './launch.js';
import { collectWgsl } from './collect.wgsl.js';
import { SPLIT_CAPACITIES, routeSplitWgsl } from './route-split.wgsl.js';
import { routeWgsl } from './route.wgsl.js';
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
const COLLECT: ShaderSpec = { name: 'moba.collect', code: collectWgsl, bindings: ['uniform', 'read', 'rw', 'rw', 'rw'] };
/** Query rows per routing workgroup (route.wgsl.ts: one owner invocation per row). */
export const ROUTE_ROWS = 64;
const COLLECT_WG = 256; // collect.wgsl.ts's scanLocal takes 4 lists per invocation
const SCAN_LISTS = 4 * COLLECT_WG;

export interface Dims {
  readonly T: number;
  readonly Hq: number;
  readonly Hkv: number;
  readonly D: number;
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

/** Workspace of encodeCollect in bytes: atomic counters, then the rows in arrival order plus the scan sums. */
export function collectScratchBytes(lists: CollectedLayout): { counters: number; scratch: number } {
  return { counters: 2 * lists.nLists * 4, scratch: (lists.maxEntries + 2 * Math.ceil(lists.nLists / SCAN_LISTS)) * 4 };
}

/**
 * The collected form of `indices` into `collected` (CollectedLayout): its geometry section, then count →
 * prefix sums (counts and chunks) → scatter → per-list sort, which also writes `inv` and the chunk table.
 * `counters` must be zero (fresh).
 */
export function encodeCollect(
  l: Launch, geometry: Geometry, dims: { T: number; Hq: number; topk: number }, lists: CollectedLayout,
  b: { indices: GPUBuffer; counters: GPUBuffer; scratch: GPUBuffer; collected: GPUBuffer },
): void {
  l.write(b.collected, lists.geoOff * 4, geometry.words);
  const fields = { ...dims, geo: lists.geo, lists };
  const bufs = [b.indices, b.counters, b.scratch, b.collected];
  const constants = { WG: COLLECT_WG, CM: CHUNK_ROWS };
  const perEntry = Math.ceil(lists.maxEntries / COLLECT_WG);
  l.add(COLLECT, 'count', constants, fields, bufs, perEntry);
  l.add(COLLECT, 'scanLocal', constants, fields, bufs, Math.ceil(lists.nLists / SCAN_LISTS));
  l.add(COLLECT, 'scanTop', constants, fields, bufs, 1);
  l.add(COLLECT, 'scanAdd', constants, fields, bufs, Math.ceil(lists.nLists / COLLECT_WG));
  l.add(COLLECT, 'scatter', constants, fields, bufs, perEntry);
  l.add(COLLECT, 'sortLists', constants, fields, bufs, lists.nLists);
}
