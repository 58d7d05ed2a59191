/**
 * Playing a cache schedule on a backend (cache-schedule.ts) and checking one attend against the reference
 * (cache-expect.ts): shared by the cache properties. A backend without a KV cache gets a capability skip.
 */
import { type Backend, toFloat64 } from '@moba/core';
import { failure } from '../checks.js';
import { type PropertyContext, Skip } from '../types.js';
import { attendChecks, keyCheck } from './cache-expect.js';
import { type AttendResult, type CacheSpec, CacheRun, describeCacheSpec } from './cache-schedule.js';

/** The backend under test when it has a KV cache; otherwise records the gap and skips. */
export function cacheBackend(ctx: PropertyContext): Backend {
  const b = ctx.backend;
  if (!b.caps.kvCache) {
    ctx.notCovered('KV cache (caps.kvCache is false)');
    throw new Skip('caps.kvCache is false: the backend has no KV cache (SPEC §9)');
  }
  if (typeof b.createCache !== 'function') {
    ctx.notCovered('KV cache (caps.kvCache is true but the backend has no createCache)');
    throw new Skip('caps.kvCache is true but the backend has no createCache method');
  }
  return b;
}

/** Plays `spec` on a fresh cache, calling `onAttend` after every attend and `onAppend` after every append. */
export async function playSchedule(
  b: Backend, spec: CacheSpec,
  hooks: { onAttend?: (run: CacheRun, res: AttendResult) => Promise<void>; onAppend?: (run: CacheRun, seqs: number[]) => Promise<void>; split?: boolean; pages?: number },
): Promise<CacheRun> {
  const run = await CacheRun.start(b, spec, hooks.pages);
  try {
    for (const st of spec.steps) {
      if (st.op === 'append') {
        await run.append(st.parts, hooks.split ?? false);
        await hooks.onAppend?.(run, st.parts.map(([i]) => i));
      } else {
        const parts = run.attendParts(st.parts);
        if (parts.length > 0) await hooks.onAttend?.(run, await run.attend(parts));
      }
    }
    return run;
  } catch (e) {
    await run.destroy();
    throw e;
  }
}

/** The checks of one attend: each sequence's keys (read()) vs the reference kconv, then out and lse vs the reference. */
export async function checkAttend(run: CacheRun, res: AttendResult): Promise<void> {
  const lines: string[] = [];
  const keys: Float64Array[] = [];
  for (const i of res.seqs) {
    const got = await run.cache.read(run.ids[i]!);
    const kc = keyCheck(run, i, got);
    if (typeof kc === 'string') lines.push(kc);
    else if (kc && !kc.ok) lines.push(kc.message);
    keys.push(toFloat64(got.k));
  }
  const a = attendChecks(run, res, keys);
  for (const c of a.checks) if (!c.ok) lines.push(c.message);
  if (lines.length > 0) {
    const what = `attend of sequences [${res.seqs.join(', ')}] with nq [${res.nq.join(', ')}] at lengths [${res.seqs.map((i) => run.length(i)).join(', ')}]` +
      (a.nearTies > 0 ? ` (${a.nearTies} of ${a.rows} rows left out as routing near-ties)` : '');
    throw failure(describeCacheSpec(run.spec), [what, ...lines]);
  }
}

