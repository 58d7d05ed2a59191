/**
 * KV cache pool properties (SPEC §9): an append that does not fit fails with E_MEMORY before writing anything
 * (every sequence's contents, the stats and a later attend are bitwise unchanged, and the cache stays usable);
 * freed pages return to the pool and a new sequence reuses them with correct results; a fork shares full pages
 * only and appending to either side leaves the other unchanged.
 */
import type { CacheContents, CacheStats } from '@moba/core';
import { expectMobaError, failure, firstBitDiff, forAll } from '../checks.js';
import type { Property } from '../types.js';
import { contentsErrors } from './cache-expect.js';
import { type AttendResult, type CacheRun, cacheSpecArb, describeCacheSpec, pagesNeeded, withFirstAppend } from './cache-schedule.js';
import { cacheBackend, checkAttend, playSchedule } from './cache-play.js';

/** Where two contents differ bitwise (length, keys, values, centroids, open sum, kconv state; pages when asked). */
export function contentsDiff(label: string, a: CacheContents, b: CacheContents, pages = true): string | null {
  if (a.length !== b.length || a.openCount !== b.openCount) return `${label}: length ${a.length} → ${b.length}, openCount ${a.openCount} → ${b.openCount}`;
  for (const f of ['k', 'v', 'centroids', 'openSum', 'kconvState'] as const) {
    const at = firstBitDiff(a[f].data, b[f].data);
    if (at >= 0) return `${label}: read().${f} changed at flat index ${at}: ${a[f].data[at]} → ${b[f].data[at]}`;
  }
  if (pages && firstBitDiff(a.pages, b.pages) >= 0) return `${label}: read().pages changed: [${Array.from(a.pages).join(', ')}] → [${Array.from(b.pages).join(', ')}]`;
  return null;
}

async function snapshot(run: CacheRun): Promise<CacheContents[]> {
  const out: CacheContents[] = [];
  for (const id of run.ids) out.push(await run.cache.read(id));
  return out;
}

function statsDiff(label: string, a: CacheStats, b: CacheStats): string | null {
  for (const f of ['usedPages', 'freePages', 'sharedPages', 'sequences', 'tokens'] as const) {
    if (a[f] !== b[f]) return `${label}: memoryStats().${f} ${a[f]} → ${b[f]}`;
  }
  return null;
}

function resultDiff(label: string, a: AttendResult, b: AttendResult): string | null {
  for (const f of ['out', 'lse'] as const) {
    const at = firstBitDiff(a[f].data, b[f].data);
    if (at >= 0) return `${label}: attend ${f} changed at flat index ${at}: ${a[f].data[at]} → ${b[f].data[at]}`;
  }
  return null;
}

/** Each sequence's pages are ceil(length / B), and usedPages counts them (no forks alive). */
function usedPagesError(run: CacheRun, s: CacheStats): string | null {
  const want = run.ids.reduce((a, _, i) => a + Math.ceil(run.length(i) / run.spec.blockSize), 0);
  return s.usedPages === want ? null : `memoryStats().usedPages = ${s.usedPages}, expected the sequences' ceil(length / B) pages = ${want}`;
}

const fewer = (n: number): number => Math.max(2, Math.ceil(n / 3));

export const cachePoolProperties: Property[] = [
  {
    group: 'cache',
    name: 'E_MEMORY on a full pool: the failing append writes nothing (contents, stats, attend unchanged) and the cache stays usable',
    async run(ctx) {
      const b = cacheBackend(ctx);
      await forAll(ctx, cacheSpecArb(b.caps, { minSeqs: 2, maxSteps: 4 }), async (spec) => {
        const run = await playSchedule(b, spec, { pages: pagesNeeded(spec, 0) + 1 }); // one page left free
        const lines: string[] = [];
        try {
          const B = spec.blockSize;
          const stats0 = run.cache.memoryStats();
          const used = usedPagesError(run, stats0);
          if (used) lines.push(used);
          if (stats0.freePages !== 1) lines.push(`memoryStats().freePages = ${stats0.freePages}, expected 1 (pool of ${stats0.pages} pages)`);
          const before = await snapshot(run);
          const parts = run.attendParts(run.ids.map((_, i) => [i, 2]));
          const att0 = parts.length > 0 ? await run.attend(parts) : null;
          // sequence 0's B tokens fit in the free page; sequence 1's 2B do not: the whole call must fail unwritten
          for (const [what, p] of [['append of 2B tokens to sequence 1', [[1, 2 * B]]], ['append of B tokens to sequence 0 and 2B to sequence 1', [[0, B], [1, 2 * B]]]] as const) {
            const err = await expectMobaError(what, ['E_MEMORY'], () => run.append(p));
            if (err) lines.push(err);
            const after = await snapshot(run);
            before.forEach((c, i) => { const d = contentsDiff(`after the failed ${what}, sequence ${i}`, c, after[i]!); if (d) lines.push(d); });
            const s = statsDiff(`after the failed ${what}`, stats0, run.cache.memoryStats());
            if (s) lines.push(s);
            if (att0) {
              const d = resultDiff(`after the failed ${what}`, att0, await run.attend(parts, att0.q64));
              if (d) lines.push(d);
            }
            if (lines.length > 0) break;
          }
          if (lines.length === 0) { // still usable: what fits goes in and is right
            await run.append([[0, B]]);
            lines.push(...contentsErrors(run, 0, await run.cache.read(run.ids[0]!)));
            await checkAttend(run, await run.attend([[0, Math.min(3, run.length(0))]]));
          }
        } finally {
          await run.destroy();
        }
        if (lines.length > 0) throw failure(describeCacheSpec(spec), lines.slice(0, 8));
      }, fewer(ctx.numRuns));
    },
  },
  {
    group: 'cache',
    name: 'free() returns pages to the pool; a new sequence reuses them and gives correct results',
    async run(ctx) {
      const b = cacheBackend(ctx);
      await forAll(ctx, cacheSpecArb(b.caps, { minSeqs: 2, maxSteps: 4 }), async (s0) => {
        const spec = withFirstAppend(s0, [[0, s0.blockSize + 1]]);
        const run = await playSchedule(b, spec, { pages: pagesNeeded(spec, 0) + 1 });
        const lines: string[] = [];
        try {
          const B = spec.blockSize;
          const st0 = run.cache.memoryStats();
          const n0 = run.length(0);
          const p0 = Math.ceil(n0 / B);
          const others = (await snapshot(run)).slice(1);
          const oldId = run.ids[0]!;
          run.renew(0);
          const st1 = run.cache.memoryStats();
          const want = { usedPages: st0.usedPages - p0, freePages: st0.freePages + p0, sequences: st0.sequences, tokens: st0.tokens - n0 };
          for (const [f, v] of Object.entries(want)) {
            const got = st1[f as keyof typeof want];
            if (got !== v) lines.push(`after free() of a sequence of ${n0} tokens (${p0} pages): memoryStats().${f} = ${got}, expected ${v}`);
          }
          const err = await expectMobaError(`read() of the freed sequence ${oldId}`, ['E_RANGE'], () => run.cache.read(oldId));
          if (err) lines.push(err);
          lines.push(...contentsErrors(run, 0, await run.cache.read(run.ids[0]!)).map((l) => `the new, empty sequence: ${l}`));
          // the new sequence needs every free page: it can only succeed by reusing the freed ones
          const total = st1.freePages * B;
          await run.append([[0, Math.ceil(total / 2)]]);
          await run.append([[0, total - Math.ceil(total / 2)]]);
          const st2 = run.cache.memoryStats();
          if (st2.freePages !== 0) lines.push(`after filling the pool again: memoryStats().freePages = ${st2.freePages}, expected 0`);
          const mine = await run.cache.read(run.ids[0]!);
          lines.push(...contentsErrors(run, 0, mine));
          const after = (await snapshot(run)).slice(1);
          others.forEach((c, i) => {
            const d = contentsDiff(`sequence ${i + 1} after the free and reuse`, c, after[i]!);
            if (d) lines.push(d);
            const clash = Array.from(mine.pages).filter((p) => after[i]!.pages.includes(p));
            if (clash.length > 0) lines.push(`the new sequence holds page(s) ${clash.join(', ')} of live sequence ${i + 1}`);
          });
          if (lines.length === 0) await checkAttend(run, await run.attend([[0, Math.min(4, run.length(0))]]));
          for (const id of [...run.ids]) run.cache.free(id);
          const st3 = run.cache.memoryStats();
          if (st3.usedPages !== 0 || st3.freePages !== st3.pages || st3.sequences !== 0 || st3.tokens !== 0) {
            lines.push(`after freeing everything: usedPages ${st3.usedPages}, freePages ${st3.freePages} of ${st3.pages}, sequences ${st3.sequences}, tokens ${st3.tokens}`);
          }
        } finally {
          await run.destroy();
        }
        if (lines.length > 0) throw failure(describeCacheSpec(spec), lines.slice(0, 8));
      }, fewer(ctx.numRuns));
    },
  },
  {
    group: 'cache',
    name: 'fork(): full pages shared (sharedPages > 0), the open page copied; appending to either side leaves the other unchanged',
    async run(ctx) {
      const b = cacheBackend(ctx);
      await forAll(ctx, cacheSpecArb(b.caps, { maxSteps: 4 }), async (s0) => {
        const B = s0.blockSize;
        const spec = withFirstAppend(s0, [[0, B + 1]]);
        const run = await playSchedule(b, spec, { pages: pagesNeeded(spec, 0) + 8 });
        const lines: string[] = [];
        try {
          if (B > 1 && run.length(0) % B === 0) await run.append([[0, 1]]); // an open block to copy
          const a0 = await run.cache.read(run.ids[0]!);
          const att0 = await run.attend([[0, Math.min(3, run.length(0))]]);
          const f = await run.fork(0);
          const fc0 = await run.cache.read(run.ids[f]!);
          const d = contentsDiff('the fork vs its original', a0, fc0, false);
          if (d) lines.push(d);
          const shared = Array.from(fc0.pages).filter((p) => a0.pages.includes(p));
          const st = run.cache.memoryStats();
          if (shared.length > 0 && st.sharedPages < shared.length) lines.push(`the fork shares pages [${shared.join(', ')}] but memoryStats().sharedPages = ${st.sharedPages}`);
          if (a0.openCount > 0 && fc0.pages[fc0.pages.length - 1] === a0.pages[a0.pages.length - 1]) lines.push(`the fork shares the open page ${a0.pages[a0.pages.length - 1]} (it must be copied)`);
          await run.append([[f, B + 2]]); // completes the fork's open block and opens another
          const d1 = contentsDiff('the original after appending to its fork', a0, await run.cache.read(run.ids[0]!));
          if (d1) lines.push(d1);
          const r1 = resultDiff('the original after appending to its fork', att0, await run.attend([[0, att0.nq[0]!]], att0.q64));
          if (r1) lines.push(r1);
          const fc1 = await run.cache.read(run.ids[f]!);
          lines.push(...contentsErrors(run, f, fc1));
          await run.append([[0, 3]]);
          const d2 = contentsDiff('the fork after appending to the original', fc1, await run.cache.read(run.ids[f]!));
          if (d2) lines.push(d2);
          lines.push(...contentsErrors(run, 0, await run.cache.read(run.ids[0]!)));
          run.cache.free(run.ids[0]!);
          const d3 = contentsDiff('the fork after freeing the original', fc1, await run.cache.read(run.ids[f]!));
          if (d3) lines.push(d3);
          if (lines.length === 0) await checkAttend(run, await run.attend([[f, Math.min(5, run.length(f))]]));
        } finally {
          await run.destroy();
        }
        if (lines.length > 0) throw failure(describeCacheSpec(spec), lines.slice(0, 8));
      }, fewer(ctx.numRuns));
    },
  },
];
