/**
 * Collect launcher (collect.wgsl.ts): a routing's indices [T, Hq, topk] into the key-block-major lists the
 * forward and backward walk (CollectedLayout in shapes.ts), run when the routing is made (route,
 * routingFromIndices) and kept with it.
 */
/// <reference types="@webgpu/types" />
import type { QueryRows, Sequences } from '@moba/core';
import { buildGeometry, type Geometry } from './geometry.js';
import type { Launch } from './launch.js';
import type { ShaderSpec } from './pipelines.js';
import { CHUNK_ROWS, type CollectedLayout, collectedLayout } from './shapes.js';
import { collectWgsl } from './collect.wgsl.js';

const COLLECT: ShaderSpec = { name: 'moba.collect', code: collectWgsl, bindings: ['uniform', 'read', 'rw', 'rw', 'rw'] };
const COLLECT_WG = 256; // collect.wgsl.ts's scanLocal takes 4 lists per invocation
const SCAN_LISTS = 4 * COLLECT_WG;

/**
 * The geometry (tiles of CHUNK_ROWS rows) and the collected layout of a routing of T query rows; `queries` maps
 * them to key rows where they are not the key rows (SPEC §8): the lists then hold query rows per key block.
 */
export function collectPlan(
  seqs: Sequences, T: number, Hq: number, cfg: { blockSize: number; topk: number }, queries?: QueryRows,
): { geo: Geometry; lists: CollectedLayout } {
  const geo = buildGeometry(seqs, T, cfg.blockSize, CHUNK_ROWS, queries);
  return { geo, lists: collectedLayout(T, Hq, cfg.topk, geo) };
}

/** Workspace of encodeCollect in bytes: atomic counters, then the rows in arrival order plus the scan sums. */
export function collectScratchBytes(lists: CollectedLayout): { counters: number; scratch: number } {
  return { counters: 2 * lists.nLists * 4, scratch: (lists.maxEntries + 2 * Math.ceil(lists.nLists / SCAN_LISTS)) * 4 };
}

/**
 * The collected form of `indices` into `collected` (CollectedLayout): its geometry section, then count →
 * prefix sums (counts and chunks) → scatter → per-list sort, which also writes `entryOf` and the chunk table.
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

/** Encodes the collect of `indices` into `l` with its scratch (temporaries); returns the collected buffer (a temporary too). */
export function encodeCollected(l: Launch, geometry: Geometry, dims: { T: number; Hq: number; topk: number }, lists: CollectedLayout, indices: GPUBuffer): GPUBuffer {
  const sizes = collectScratchBytes(lists);
  const collected = l.temp('collected routing', lists.words * 4);
  encodeCollect(l, geometry, dims, lists, {
    indices, counters: l.temp('collect counters', sizes.counters), scratch: l.temp('collect scratch', sizes.scratch), collected,
  });
  return collected;
}

/** Sizes of the collect buffers: the collected routing (kept) and its scratch. */
export function collectBytes(lists: CollectedLayout): Record<string, number> {
  const scratch = collectScratchBytes(lists);
  return { collected: lists.words * 4, 'collect counters': scratch.counters, 'collect scratch': scratch.scratch };
}
