/**
 * Host side of the WebGPU KV cache: the page geometry (row stride, bytes per page), the small per-call tables the
 * append and attend kernels read (cache-append.wgsl.ts, cache-attend.wgsl.ts; uploaded with queue.writeBuffer),
 * and the decoding of a downloaded sequence into CacheContents.
 */
import { type AppendPlan, type AttendPlan, type CacheContents, type DType, MobaError, hostTensor } from '@moba/core';
import { APPEND_HEADER } from './cache-append.wgsl.js';
import { ATTEND_HEADER } from './cache-route.wgsl.js';
import { MAX_POOL_BUFFERS } from './cache-pool.wgsl.js';

/** The page layout of a cache: channels C = Hkv·D, row stride RS (C padded to even for 16-bit storage). */
export interface PageGeometry {
  readonly Hkv: number;
  readonly D: number;
  readonly C: number;
  readonly RS: number;
  readonly B: number;
  readonly dtype: DType;
  /** Bytes of one page of keys (or of values): B rows of RS elements. */
  readonly kvBytes: number;
  /** Bytes of one page's meta: its f32 sum and centroid, [2, C]. */
  readonly metaBytes: number;
}

export function pageGeometry(o: { Hkv: number; D: number; dtype: DType; blockSize: number }): PageGeometry {
  const C = o.Hkv * o.D;
  const RS = o.dtype === 'f32' ? C : C + (C & 1);
  const es = o.dtype === 'f32' ? 4 : 2;
  return { Hkv: o.Hkv, D: o.D, C, RS, B: o.blockSize, dtype: o.dtype, kvBytes: o.blockSize * RS * es, metaBytes: 2 * C * 4 };
}

/** What a page really takes: its keys, values, f32 sum and f32 centroid. */
export function cachePageBytes(o: { Hkv: number; D: number; dtype: DType; blockSize: number }): number {
  const g = pageGeometry(o);
  return 2 * g.kvBytes + g.metaBytes;
}

/** How the key (and value) pages are spread over buffers: ppb pages per buffer, n buffers (cache-pool.wgsl.ts). */
export interface PoolLayout {
  readonly ppb: number;
  readonly n: number;
  /** Buffers one dispatch binds (a group; the last one may have fewer). */
  readonly per: number;
}

/** Storage bindings of the cache shaders besides the pools (table, inputs, meta, outputs / state). */
const OTHER_BINDINGS = 5;

/**
 * The fewest buffers that hold `pages` pages within the device's binding limits, or (tests: the
 * MOBA_WEBGPU_CACHE_POOL_BUFFERS variable) at least `forceBuffers` buffers when the pages allow, and the groups a
 * dispatch binds (MAX_POOL_BUFFERS, and as maxStorageBuffersPerShaderStage allows; `forcePer`: tests, the
 * MOBA_WEBGPU_CACHE_GROUP_BUFFERS variable). E_MEMORY when a page does not fit a binding.
 */
export function poolLayout(
  limits: { maxStorageBufferBindingSize: number; maxBufferSize: number; maxStorageBuffersPerShaderStage: number },
  kvBytes: number, pages: number, forceBuffers = 1, forcePer = MAX_POOL_BUFFERS,
): PoolLayout {
  const max = Math.min(limits.maxStorageBufferBindingSize, limits.maxBufferSize);
  const most = Math.min(MAX_POOL_BUFFERS, Math.floor((limits.maxStorageBuffersPerShaderStage - OTHER_BINDINGS) / 2));
  const ppb = Math.max(1, Math.min(Math.floor(max / kvBytes), Math.ceil(pages / forceBuffers)));
  if (ppb * kvBytes > max || most < 1) {
    throw new MobaError('E_MEMORY', `a cache page of ${kvBytes} bytes does not fit this device's storage binding of at most ${max} bytes (or the device binds too few storage buffers)`, 'capacity');
  }
  const n = Math.ceil(pages / ppb);
  return { ppb, n, per: Math.min(n, most, forcePer) };
}

/** The append table (header APPEND_HEADER, entries, rows, page tasks) and its task count. */
export function appendTable(plan: AppendPlan, g: PageGeometry, stateOff: number, ppb: number): { words: Uint32Array; tasks: number } {
  const B = g.B;
  const tasks: number[] = [];
  const rows = new Uint32Array(2 * plan.T);
  plan.entries.forEach((en, e) => {
    for (let i = 0; i < en.count; i++) {
      rows[2 * (en.row + i)] = e;
      rows[2 * (en.row + i) + 1] = en.pages[Math.floor((en.pos0 + i) / B)]!;
    }
    const end = en.pos0 + en.count;
    for (let p = en.pos0; p < end; p = (Math.floor(p / B) + 1) * B) {
      tasks.push(e, en.pages[Math.floor(p / B)]!, p, Math.min(end, (Math.floor(p / B) + 1) * B));
    }
  });
  const h = APPEND_HEADER.length;
  const entriesOff = h;
  const rowsOff = entriesOff + 4 * plan.entries.length;
  const tasksOff = rowsOff + rows.length;
  const words = new Uint32Array(Math.max(4, tasksOff + tasks.length));
  words.set([plan.entries.length, g.RS, g.C, tasks.length / 4, entriesOff, rowsOff, tasksOff, stateOff, ppb]);
  plan.entries.forEach((en, e) => words.set([en.slot, en.row, en.count, en.pos0], entriesOff + 4 * e));
  words.set(rows, rowsOff);
  words.set(tasks, tasksOff);
  return { words, tasks: tasks.length / 4 };
}

/** The attend table (header ATTEND_HEADER, query rows, entries, page lists). */
export function attendTable(plan: AttendPlan, g: PageGeometry, headChunks: number, ppb: number): Uint32Array {
  const h = ATTEND_HEADER.length;
  const rowsOff = h;
  const entriesOff = rowsOff + 2 * plan.Tq;
  const pagesOff = entriesOff + 2 * plan.entries.length;
  const nPages = plan.entries.reduce((a, en) => a + en.pages.length, 0);
  const words = new Uint32Array(Math.max(4, pagesOff + nPages));
  words.set([g.RS, g.C, rowsOff, entriesOff, pagesOff, headChunks, ppb]);
  let at = 0;
  plan.entries.forEach((en, e) => {
    for (let a = 0; a < en.nq; a++) words.set([e, en.length - en.nq + a], rowsOff + 2 * (en.qRow + a)); // bottom-right aligned
    words.set([en.length, at], entriesOff + 2 * e);
    words.set(en.pages, pagesOff + at);
    at += en.pages.length;
  });
  return words;
}

/**
 * A sequence's contents from its downloaded pages: `raw` holds its key pages, then its value pages (kvBytes
 * each), then their meta ([2, C] f32 each), then its kconv state ([W − 1, C] f32).
 */
export function decodeContents(raw: ArrayBuffer, g: PageGeometry, length: number, pages: Int32Array, W: number): CacheContents {
  const { B, C, RS, Hkv, D, dtype } = g;
  const n = pages.length;
  const kvOff = (part: number): number => part * n * g.kvBytes;
  const rowsOf = (part: number): Float32Array | Uint16Array => {
    const src = dtype === 'f32' ? new Float32Array(raw, kvOff(part), n * B * RS) : new Uint16Array(raw, kvOff(part), n * B * RS);
    const dst = dtype === 'f32' ? new Float32Array(length * C) : new Uint16Array(length * C);
    for (let p = 0; p < length; p++) dst.set(src.subarray(p * RS, p * RS + C), p * C);
    return dst;
  };
  const meta = new Float32Array(raw, kvOff(2), n * 2 * C);
  const full = Math.floor(length / B);
  const centroids = new Float32Array(full * C);
  for (let j = 0; j < full; j++) centroids.set(meta.subarray((2 * j + 1) * C, (2 * j + 2) * C), j * C);
  const openCount = length % B;
  const openSum = openCount > 0 ? meta.slice(2 * full * C, (2 * full + 1) * C) : new Float32Array(C);
  const S = Math.max(0, W - 1);
  const state = new Float32Array(raw, kvOff(2) + n * g.metaBytes, S * C).slice();
  for (let i = 0; i < S && length - S + i < 0; i++) state.fill(0, i * C, (i + 1) * C); // before the sequence start
  return {
    length,
    k: hostTensor(dtype, [length, Hkv, D], rowsOf(0)),
    v: hostTensor(dtype, [length, Hkv, D], rowsOf(1)),
    centroids: hostTensor('f32', [full, Hkv, D], centroids),
    openSum: hostTensor('f32', [Hkv, D], openSum),
    openCount,
    kconvState: hostTensor('f32', [S, Hkv, D], state),
    pages: pages.slice(),
  };
}
