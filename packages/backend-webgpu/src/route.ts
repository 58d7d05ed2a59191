/**
 * Routing launchers: centroids → fused tiled top-k (route.wgsl.ts) producing indices [T, Hq, topk], and
 * collect (collect.wgsl.ts) producing the key-block-major lists the dK/dV pass walks.
 */
/// <reference types="@webgpu/types" />
import type { ShaderSpec } from './device.js';
import type { Geometry } from './geometry.js';
import type { Launch, Tiles } from './launch.js';
import { collectWgsl } from './collect.wgsl.js';
import { routeWgsl } from './route.wgsl.js';

const ROUTE: ShaderSpec = { name: 'moba.route', code: routeWgsl, bindings: ['uniform', 'read', 'read', 'read', 'rw', 'rw'] };
const COLLECT: ShaderSpec = { name: 'moba.collect', code: collectWgsl, bindings: ['uniform', 'read', 'read', 'rw', 'rw'] };
/** Query rows per routing workgroup (one per thread). */
export const ROUTE_ROWS = 64;
const COLLECT_WG = 256;

export interface Dims {
  readonly T: number;
  readonly Hq: number;
  readonly Hkv: number;
  readonly D: number;
}

/** Centroids [totalBlocks, Hkv, D] into `cent`, then each row's selection into `indices` [T, Hq, topk]. */
export function encodeRoute(
  l: Launch, geo: Geometry, dims: Dims, cfg: { blockSize: number; topk: number; causal: boolean }, tiles: Tiles,
  b: { geom: GPUBuffer; q: GPUBuffer; k: GPUBuffer; cent: GPUBuffer; indices: GPUBuffer },
): void {
  const { T, Hq, Hkv, D } = dims;
  const CT = tiles.centroids;
  const constants = { TM: ROUTE_ROWS, CT, CBUF: tiles.centroidFloats };
  const fields = { T, Hq, Hkv, D, ...cfg, geo };
  const bufs = [b.geom, b.q, b.k, b.cent, b.indices];
  l.add(ROUTE, 'centroids', constants, fields, bufs, Math.ceil((geo.totalBlocks * Hkv * D) / ROUTE_ROWS));
  l.add(ROUTE, 'topk', constants, { ...fields, nItems: geo.nQTiles }, bufs, geo.nQTiles, Hq);
}

/** Collected lists of `indices` into `collected` (offsets [Hq·NB + 1] then rows); `counts` [Hq·NB] is scratch. */
export function encodeCollect(
  l: Launch, geo: Geometry, dims: { T: number; Hq: number; topk: number },
  b: { geom: GPUBuffer; indices: GPUBuffer; counts: GPUBuffer; collected: GPUBuffer },
): void {
  const { T, Hq, topk } = dims;
  const fields = { T, Hq, topk, geo, nItems: Hq * geo.totalBlocks };
  const bufs = [b.geom, b.indices, b.counts, b.collected];
  const constants = { WG: COLLECT_WG };
  l.add(COLLECT, 'count', constants, fields, bufs, Math.ceil((T * Hq) / COLLECT_WG));
  l.add(COLLECT, 'scan', constants, fields, bufs, 1);
  l.add(COLLECT, 'scatter', constants, fields, bufs, Math.ceil((Hq * geo.nSeqs) / COLLECT_WG));
}
