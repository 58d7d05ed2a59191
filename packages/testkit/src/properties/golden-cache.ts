/**
 * A seqlens_q golden case (SPEC §8) through the backend's KV cache (SPEC §9): one cache sequence per case
 * sequence, all its keys appended raw (the cache applies the case's kconv weight, given at createCache), then the
 * last nq of each sequence attended; out and lse must match the case within the tolerance policy, like the QK
 * layout path. Written against the contract of packages/core/src/cache.ts.
 */
import type { DeviceTensor, KVCache, ToleranceCheck } from '@moba/core';
import { checkTolerance } from '@moba/core';
import type { Scope } from '../checks.js';
import type { GoldenCase } from '../golden-parse.js';
import type { GoldenProblem, GoldenReference } from '../golden-problem.js';

function outChecks(label: string, p: GoldenProblem, out: Float64Array, lse: Float64Array, ref: GoldenReference): ToleranceCheck[] {
  const { T, Hq, D, dtype } = p.shape;
  return [
    checkTolerance(`${label} out`, out, ref.ref.out, ref.cal.out, { kind: 'forward', dtype, shape: [T, Hq, D] }),
    checkTolerance(`${label} lse`, lse, ref.ref.lse, ref.cal.lse, { kind: 'forward', dtype: 'f32', shape: [T, Hq] }),
  ];
}

/**
 * Failure lines of the cache run (empty when it passes). `ref` is the reference the layout path was held to (the
 * file's values under the file's routing); on a near-tie the cache's own router may pick as the backend's layout
 * path did, so `ownRef` (the reference under that routing, already checked valid) is accepted too.
 */
export async function cacheCase(
  s: Scope, gc: GoldenCase, p: GoldenProblem, w: DeviceTensor | undefined, label: string, ref: GoldenReference, ownRef: () => GoldenReference,
): Promise<string[]> {
  const b = s.backend;
  const { Hkv, D, dtype } = p.shape;
  const B = gc.blockSize;
  const pages = gc.seqlens.reduce((a, n) => a + Math.max(1, Math.ceil(n / B)), 0);
  let cache: KVCache | undefined;
  const owned: DeviceTensor[] = [];
  const what = `${label} through the KV cache`;
  try {
    cache = await b.createCache!({
      Hkv, D, dtype, blockSize: B, capacityTokens: pages * B, maxSequences: gc.seqlens.length, ...(w ? { kconvWeight: w } : {}),
    });
    const c = cache;
    const seqs = gc.seqlens.map(() => c.newSequence());
    const k = await s.up(p.k); // raw keys: the cache applies the kconv
    const v = await s.up(p.v);
    const q = await s.up(p.q);
    await c.append(seqs, k, v, gc.cuSeqlens);
    const lengths = seqs.map((id) => c.length(id));
    if (lengths.some((n, i) => n !== gc.seqlens[i])) return [`${what}: sequence lengths after append are [${lengths.join(', ')}], expected [${gc.seqlens.join(', ')}]`];
    const res = await c.attend(seqs, q, gc.cuSeqlensQ, { topk: gc.topk, causal: gc.causal, scale: gc.scale });
    owned.push(res.out, res.lse);
    const out = await s.f64(res.out);
    const lse = await s.f64(res.lse);
    const bad = outChecks(what, p, out, lse, ref).filter((x) => !x.ok);
    if (bad.length === 0) return [];
    if (outChecks(what, p, out, lse, ownRef()).every((x) => x.ok)) return [];
    return bad.map((x) => x.message);
  } catch (e) {
    return [`${what}: ${e instanceof Error ? `${e.name}: ${e.message}` : String(e)}`];
  } finally {
    b.dispose(...owned);
    await cache?.destroy();
  }
}
