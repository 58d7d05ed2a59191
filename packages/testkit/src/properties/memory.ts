/**
 * Memory accounting (`memoryStats()`, core MemoryStats): `liveBytes` counts the caller's tensors and routings
 * (it grows by at least a tensor's element bytes on upload and returns to where it started once everything made
 * is disposed), the counts of live tensors and routings follow, `peakBytes` never falls below the bytes in use,
 * and after `destroy()` every field is 0 (the call does not throw).
 */
import { type Backend, type MemoryStats, hostTensor } from '@moba/core';
import { Scope, uploadProblem } from '../checks.js';
import { makeProblem, nearestHeadDim, preferredDtype } from '../problem.js';
import { type Property, Skip } from '../types.js';

const FIELDS = ['liveBytes', 'liveTensors', 'liveRoutings', 'scratchBytes', 'pooledBytes', 'peakBytes'] as const;

/** The stats, checked for shape: every field a finite integer ≥ 0, and peak ≥ live + scratch. */
function stats(b: Backend, when: string): MemoryStats {
  const s = b.memoryStats();
  for (const f of FIELDS) {
    const v = s?.[f];
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 0) throw new Error(`memoryStats().${f} ${when} is ${String(v)}: must be an integer >= 0`);
  }
  if (s.peakBytes < s.liveBytes + s.scratchBytes) throw new Error(`memoryStats() ${when}: peakBytes ${s.peakBytes} < liveBytes ${s.liveBytes} + scratchBytes ${s.scratchBytes}`);
  return s;
}

function expectEq(what: string, got: number, want: number): void {
  if (got !== want) throw new Error(`${what} is ${got}, expected ${want}`);
}

/**
 * A count that should be `own` (what this property holds) plus the `foreign` handles alive at its start. Those
 * belong to earlier properties that dropped them without `dispose`, and the garbage collector may reclaim any of
 * them at any moment (the ledger then stops counting them), so with foreign handles only `own ≤ got ≤ own + foreign`
 * is certain; on a fresh backend (no foreign handles) the count is exact.
 */
function expectCount(what: string, got: number, own: number, foreign: number): void {
  if (foreign === 0) return expectEq(what, got, own);
  if (got < own || got > own + foreign) throw new Error(`${what} is ${got}, expected ${own} (this property's) plus at most ${foreign} from before`);
}

export const memoryProperties: Property[] = [
  {
    group: 'memory',
    name: 'memoryStats: liveBytes grows on upload and returns to its start after dispose; peak >= live; counts follow',
    async run(ctx) {
      // A throwaway backend where there is a factory: nothing from earlier properties is alive on it.
      const fresh = ctx.factory ? await ctx.factory() : null;
      try {
        await countsFollow(fresh ?? ctx.backend, ctx.seed);
      } finally {
        await fresh?.destroy();
      }
    },
  },
  {
    group: 'memory',
    name: 'memoryStats after destroy() is all zeros (never throws)',
    async run(ctx) {
      if (!ctx.factory) {
        ctx.notCovered('memoryStats after destroy (runConformance needs opts.factory to make a throwaway backend)');
        throw new Skip('no factory given to create a throwaway backend');
      }
      const fresh = await ctx.factory();
      await fresh.upload(hostTensor(preferredDtype(fresh.caps), [64])); // left for destroy() to free
      await fresh.destroy();
      const s = fresh.memoryStats();
      for (const f of FIELDS) expectEq(`memoryStats().${f} after destroy()`, s[f], 0);
      fresh.resetPeakMemory(); // a no-op, not an error
    },
  },
];

/** The body of the counts property on `b`. */
async function countsFollow(b: Backend, seed: number): Promise<void> {
  const caps = b.caps;
  const start = stats(b, 'at the start');
  const n = 4096;
  const dtype = preferredDtype(caps);
  const elemBytes = dtype === 'f32' ? 4 : 2;
  const s = new Scope(b);
  try {
    const t = await s.up(hostTensor(dtype, [n]));
    const up = stats(b, 'after an upload');
    // Foreign handles (see expectCount) may be collected at any time, so only this property's bytes are certain.
    const before = start.liveTensors + start.liveRoutings === 0 ? start.liveBytes : 0;
    if (up.liveBytes < before + n * elemBytes) throw new Error(`liveBytes after uploading ${n} ${dtype} elements is ${up.liveBytes}, expected >= ${before} + ${n * elemBytes}`);
    expectCount('liveTensors after an upload', up.liveTensors, 1, start.liveTensors);
    if (up.peakBytes < up.liveBytes) throw new Error(`peakBytes ${up.peakBytes} < liveBytes ${up.liveBytes}`);
    const p = makeProblem({
      seqlens: [24, 9], Hq: 2, Hkv: 1, D: nearestHeadDim(caps, 8), dtype, blockSize: Math.min(4, caps.maxBlockSize),
      topk: Math.min(2, caps.maxTopk), causal: true, seed,
    });
    const d = await uploadProblem(s, p);
    const r = s.own(await b.route(d.q, d.k, p.layout, p.cfg));
    const f = await b.forward(d.q, d.k, d.v, r, p.layout, p.cfg);
    s.own(f.out);
    s.own(f.lse);
    const mid = stats(b, 'after route and forward');
    expectCount('liveRoutings after route()', mid.liveRoutings, 1, start.liveRoutings);
    expectCount('liveTensors after 1 + 4 uploads and a forward', mid.liveTensors, 7, start.liveTensors);
    const floor = before === 0 && start.liveBytes > 0 ? n * elemBytes : up.liveBytes; // with foreign handles: at least the upload's
    if (mid.liveBytes <= floor) throw new Error(`liveBytes did not grow with the problem's tensors: ${up.liveBytes} → ${mid.liveBytes}`);
    b.dispose(t);
    b.dispose(t); // idempotent: counted once
    expectCount('liveTensors after disposing one tensor twice', stats(b, 'after a dispose').liveTensors, 6, mid.liveTensors - 7);
  } finally {
    s.dispose();
  }
  const end = stats(b, 'after disposing everything');
  expectCount('liveBytes after disposing everything', end.liveBytes, 0, start.liveBytes);
  expectCount('liveTensors after disposing everything', end.liveTensors, 0, start.liveTensors);
  expectCount('liveRoutings after disposing everything', end.liveRoutings, 0, start.liveRoutings);
  b.resetPeakMemory();
  const reset = stats(b, 'after resetPeakMemory()');
  if (reset.peakBytes > end.peakBytes) throw new Error(`resetPeakMemory() raised peakBytes: ${end.peakBytes} → ${reset.peakBytes}`);
}
