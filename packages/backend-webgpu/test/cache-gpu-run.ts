/**
 * A run of the WebGPU KV cache on a real GPU (bundled with esbuild, run with the device tool): a random schedule
 * checked against the f64 reference (as test/cache.test.ts does), then decode timings. Prints a table; not a test.
 */
import { performance } from 'node:perf_hooks';
import type { DType } from '@moba/core';
import { toFloat64 } from '@moba/core';
import { createWebGpuBackend } from '../src/index.js';
import { Rng, SeqModel, appendRandom, referenceChecks } from './cache-model.js';

const b = await createWebGpuBackend();
console.log('adapter ok');
let fails = 0;
for (const [ci, dtype] of (['f32', 'f16', 'bf16'] as DType[]).entries()) {
  for (const causal of [true, false]) {
    const [Hkv, Hq, D, B] = [2, 8, 64, 16];
    const rng = new Rng(100 + ci);
    const cache = await b.createCache!({ Hkv, D, dtype, blockSize: B, capacityTokens: 4096, maxSequences: 8 });
    const ids = [cache.newSequence(), cache.newSequence(), cache.newSequence()];
    const models = ids.map(() => new SeqModel({ Hkv, D, dtype, B, W: 0, w: new Float64Array(0) }));
    for (let step = 0; step < 5; step++) {
      await appendRandom(b, cache, rng, ids, models, ids.map(() => rng.int(1, 150)));
      const nq = ids.map(() => rng.int(1, 6));
      const Tq = nq.reduce((a, x) => a + x, 0);
      const q = rng.tensor(dtype, [Tq, Hq, D]);
      const qd = await b.upload(q);
      const cu = Int32Array.from([0, nq[0]!, nq[0]! + nq[1]!, Tq]);
      const r = await cache.attend(ids, qd, cu, { topk: 3, causal });
      const got = { out: toFloat64(await b.download(r.out)), lse: toFloat64(await b.download(r.lse)) };
      b.dispose(qd, r.out, r.lse);
      for (const c of referenceChecks(`${dtype} causal ${causal} step ${step}`, models, nq, q, got, { topk: 3, causal })) {
        if (!c.ok) { fails++; console.log('FAIL', c.message); }
      }
    }
    await cache.destroy();
  }
}
console.log(`correctness: ${fails} failures`);
// decode timing: batch of sequences of N tokens, one query each
for (const [N, batch] of [[8192, 8], [32768, 4]] as const) {
  const [Hkv, Hq, D, B, topk] = [8, 32, 128, 64, 8];
  const cache = await b.createCache!({ Hkv, D, dtype: 'bf16', blockSize: B, capacityTokens: N * batch + 1024, maxSequences: batch });
  const ids = Array.from({ length: batch }, () => cache.newSequence());
  const rng = new Rng(1);
  for (let done = 0; done < N; done += 4096) {
    const kk = await b.upload(rng.tensor('bf16', [4096 * batch, Hkv, D]));
    const cu = Int32Array.from({ length: batch + 1 }, (_, i) => i * 4096);
    await cache.append(ids, kk, kk, cu);
    b.dispose(kk);
  }
  const q = await b.upload(rng.tensor('bf16', [batch, Hq, D]));
  const cu = Int32Array.from({ length: batch + 1 }, (_, i) => i);
  const times: number[] = [];
  for (let it = 0; it < 25; it++) {
    const t0 = performance.now();
    const r = await cache.attend(ids, q, cu, { topk });
    await b.download(r.lse);
    times.push(performance.now() - t0);
    b.dispose(r.out, r.lse);
  }
  times.sort((x, y) => x - y);
  const k1 = await b.upload(rng.tensor('bf16', [batch, Hkv, D]));
  const ta = performance.now();
  await cache.append(ids, k1, k1, cu);
  await b.sync();
  const tApp = performance.now() - ta;
  b.dispose(q, k1);
  console.log(`decode bf16 N=${N} batch=${batch} Hq=${Hq} Hkv=${Hkv} D=${D} B=${B} topk=${topk}: attend median ${times[12]!.toFixed(3)} ms (min ${times[0]!.toFixed(3)}), one-token append ${tApp.toFixed(3)} ms`);
  await cache.destroy();
}
await b.destroy();
