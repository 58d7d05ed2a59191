/**
 * KV cache properties (SPEC §9), for any backend with `caps.kvCache` and `createCache` (others get a capability
 * skip): random schedules of appends (chunks of 1 to a few hundred tokens, sequences interleaved, several in one
 * call) and attends (nq = 1 and more) match the float64 reference on the whole key sequence so far; `read()`
 * equals a recompute; a sequence's attend is bitwise the same alone and batched, and twice; the pool, fork and
 * validation properties are in cache-pool.ts and cache-validation.ts.
 */
import type { HostTensor } from '@moba/core';
import { failure, firstBitDiff, forAll } from '../checks.js';
import { type Property, type PropertyContext, Skip } from '../types.js';
import { contentsErrors } from './cache-expect.js';
import { cacheBackend, checkAttend, playSchedule } from './cache-play.js';
import { cachePoolProperties } from './cache-pool.js';
import { type AttendResult, type CacheSpec, CacheRun as Run, cacheSpecArb, describeCacheSpec } from './cache-schedule.js';
import { cacheValidationProperties } from './cache-validation.js';

/** Bitwise comparison of query rows `[r0, r0 + rows of c)` of `a` against all of `c`; null when equal. */
function rowsDiff(label: string, spec: CacheSpec, a: AttendResult, r0: number, c: AttendResult): string | null {
  const rows = c.lse.data.length / spec.Hq;
  for (const [name, per] of [['out', spec.Hq * spec.D], ['lse', spec.Hq]] as const) {
    const x = a[name].data.subarray(r0 * per, (r0 + rows) * per);
    const at = firstBitDiff(x, c[name].data);
    if (at >= 0) return `${label}: ${name} differs first at query row ${r0 + Math.floor(at / per)} (flat ${at}: ${x[at]} vs ${c[name].data[at]})`;
  }
  return null;
}

/** Deterministic-only properties skip on a backend that does not declare it. */
function needDeterministic(ctx: PropertyContext, what: string): void {
  if (!ctx.backend.caps.deterministic) {
    ctx.notCovered(`${what} (caps.deterministic is false)`);
    throw new Skip('caps.deterministic is false');
  }
}

export const cacheProperties: Property[] = [
  {
    group: 'cache',
    name: 'random schedules of appends and attends: out and lse match the reference on the whole key sequence so far',
    async run(ctx) {
      const b = cacheBackend(ctx);
      await forAll(ctx, cacheSpecArb(b.caps), async (spec) => {
        const run = await playSchedule(b, spec, { onAttend: checkAttend });
        await run.destroy();
      });
    },
  },
  {
    group: 'cache',
    name: 'read() after every append equals a recompute: keys after kconv, values, centroids, open sum, kconv state',
    async run(ctx) {
      const b = cacheBackend(ctx);
      await forAll(ctx, cacheSpecArb(b.caps), async (spec) => {
        const run = await playSchedule(b, spec, {
          onAppend: async (r) => {
            const lines: string[] = [];
            for (let i = 0; i < spec.seqs; i++) lines.push(...contentsErrors(r, i, await r.cache.read(r.ids[i]!)));
            if (lines.length > 0) throw failure(describeCacheSpec(spec), [`after ${r.ids.map((_, i) => `${r.length(i)}`).join(', ')} tokens:`, ...lines]);
          },
        });
        await run.destroy();
      });
    },
  },
  {
    group: 'cache',
    name: "batch invariance: a sequence's attend is bitwise the same alone, batched, and after appends batched differently",
    async run(ctx) {
      const b = cacheBackend(ctx);
      needDeterministic(ctx, 'KV cache batch invariance');
      await forAll(ctx, cacheSpecArb(b.caps, { minSeqs: 2 }), async (spec) => {
        const [run, other] = [await Run.start(b, spec), await Run.start(b, spec)];
        const lines: string[] = [];
        try {
          for (const st of spec.steps) {
            if (st.op === 'append') {
              await run.append(st.parts);
              await other.append(st.parts, true); // the same data, one sequence per call
              continue;
            }
            const parts = run.attendParts(st.parts);
            if (parts.length === 0) continue;
            const res = await run.attend(parts);
            const d = rowsDiff('after the same appends made one sequence per call', spec, res, 0, await other.attend(parts, res.q64));
            if (d) lines.push(d);
            let r0 = 0;
            for (const [i, nq] of parts) {
              const alone = await run.attend([[i, nq]], res.q64.subarray(r0 * spec.Hq * spec.D, (r0 + nq) * spec.Hq * spec.D));
              const e = rowsDiff(`sequence ${i} alone vs batched with [${res.seqs.join(', ')}]`, spec, res, r0, alone);
              if (e) lines.push(e);
              r0 += nq;
            }
          }
        } finally {
          await run.destroy();
          await other.destroy();
        }
        if (lines.length > 0) throw failure(describeCacheSpec(spec), lines.slice(0, 6));
      }, Math.max(2, Math.ceil(ctx.numRuns / 2)));
    },
  },
  {
    group: 'cache',
    name: 'determinism: the same schedule twice gives bitwise-equal attends and contents',
    async run(ctx) {
      const b = cacheBackend(ctx);
      needDeterministic(ctx, 'KV cache determinism');
      await forAll(ctx, cacheSpecArb(b.caps), async (spec) => {
        const outs: HostTensor[][] = [[], []];
        const runs: Run[] = [];
        try {
          for (const n of [0, 1]) runs.push(await playSchedule(b, spec, { onAttend: async (_, res) => void outs[n]!.push(res.out, res.lse) }));
          const lines: string[] = [];
          outs[0]!.forEach((t, j) => {
            const at = firstBitDiff(t.data, outs[1]![j]!.data);
            if (at >= 0) lines.push(`attend result ${j >> 1} (${j % 2 ? 'lse' : 'out'}) differs at flat index ${at}: ${t.data[at]} vs ${outs[1]![j]!.data[at]}`);
          });
          for (let i = 0; i < spec.seqs; i++) {
            const [x, y] = [await runs[0]!.cache.read(runs[0]!.ids[i]!), await runs[1]!.cache.read(runs[1]!.ids[i]!)];
            for (const f of ['k', 'v', 'centroids', 'openSum', 'kconvState'] as const) {
              const at = firstBitDiff(x[f].data, y[f].data);
              if (at >= 0) lines.push(`sequence ${i}: read().${f} differs at flat index ${at}: ${x[f].data[at]} vs ${y[f].data[at]}`);
            }
          }
          if (lines.length > 0) throw failure(describeCacheSpec(spec), lines.slice(0, 6));
        } finally {
          for (const r of runs) await r.destroy();
        }
      }, Math.max(2, Math.ceil(ctx.numRuns / 3)));
    },
  },
  ...cachePoolProperties,
  ...cacheValidationProperties,
];
