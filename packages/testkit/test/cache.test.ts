/**
 * The KV cache properties (SPEC §9) can pass and can fail: the reference backend's cache passes them all, a
 * backend without a cache gets capability skips (never failures), and each faulty cache (faulty-caches.ts) is
 * caught by the properties that cover its fault while the others pass.
 */
import { type Backend, wrapBackend } from '@moba/core';
import { describe, expect, it } from 'vitest';
import { type Report, runConformance } from '../src/index.js';
import { createReferenceBackend } from '../src/reference-backend.js';
import { droppedKconvState, openSumNotCarried, sharedOpenPage, staleStateOnReuse, topkOffByOne, writesBeforeCapacityCheck } from './faulty-caches.js';

const P = {
  schedules: 'cache: random schedules',
  contents: 'cache: read() after every append',
  batch: 'cache: batch invariance',
  determinism: 'cache: determinism',
  memory: 'cache: E_MEMORY',
  free: 'cache: free()',
  fork: 'cache: fork()',
  validation: 'cache: validation',
};
const ALL = Object.values(P);

async function run(b: Backend, numRuns = 8): Promise<Report> {
  try {
    return await runConformance(b, { only: ['cache: '], numRuns });
  } finally {
    await b.destroy();
  }
}

function result(r: Report, name: string): { ok: boolean; skipped: boolean; message: string } {
  const x = r.results.find((y) => `${y.group}: ${y.name}`.startsWith(name));
  if (!x) throw new Error(`property ${name} did not run; ran ${r.results.map((y) => y.name).join(', ')}`);
  return { ok: x.ok, skipped: x.skipped ?? false, message: x.message ?? '' };
}

/**
 * The `fail` properties fail (not skip); those the fault cannot touch pass. The rest (properties whose own
 * schedules may or may not reach the fault under a given seed) may go either way.
 */
function expectFails(r: Report, fail: string[], pass: string[]): void {
  expect(r.results.length).toBe(ALL.length);
  for (const n of [...fail, ...pass]) {
    const x = result(r, n);
    expect(x.skipped, `${n} should run`).toBe(false);
    if (fail.includes(n)) expect(x.ok, `${n} should fail`).toBe(false);
    else expect(x.ok, `${n} should pass: ${x.message}`).toBe(true);
  }
}

describe('KV cache properties', () => {
  it('the reference backend passes every cache property', async () => {
    const r = await run(createReferenceBackend(), 12);
    expectFails(r, [], ALL);
    expect(r.passed).toBe(ALL.length);
  });

  it('a backend without a KV cache gets a capability skip with the reason, never a failure', async () => {
    const r = await run(createReferenceBackend({ caps: { kvCache: false } }));
    expect(r.failed).toBe(0);
    expect(r.skipped).toBe(ALL.length);
    for (const x of r.results) expect(x.message).toMatch(/caps\.kvCache is false/);
    expect(r.notCovered).toContain('KV cache (caps.kvCache is false)');
    const inner = createReferenceBackend();
    const noMethod = await run(wrapBackend(inner, { createCache: undefined })); // caps say kvCache, but the backend has no createCache
    await inner.destroy();
    expect(noMethod.failed).toBe(0);
    for (const x of noMethod.results) expect(x.message).toMatch(/no createCache/);
  });

  it('(a) the kconv state dropped between appends fails the schedules and read() properties', async () => {
    const r = await run(droppedKconvState());
    expectFails(r, [P.schedules, P.contents], [P.batch, P.determinism, P.validation]);
    expect(result(r, P.schedules).message).toMatch(/keys after kconv \(read\(\)\.k\): max abs error .* NOT within/);
    expect(result(r, P.contents).message).toMatch(/kconvState|keys after kconv/);
  });

  it("(b) the open block's sum not carried across appends fails read() (centroids, open sum)", async () => {
    const r = await run(openSumNotCarried());
    expectFails(r, [P.contents], [P.schedules, P.batch, P.determinism, P.validation]);
    expect(result(r, P.contents).message).toMatch(/(centroid of block \d+|open block sum), channel \d+ = .*f32 bound/);
  });

  it('(c) a fork that shares its open page fails the fork property', async () => {
    const r = await run(sharedOpenPage());
    expectFails(r, [P.fork], [P.schedules, P.contents, P.batch, P.determinism, P.memory, P.free, P.validation]);
    expect(result(r, P.fork).message).toMatch(/the original after appending to its fork: read\(\)\.openSum changed/);
  });

  it('(d) an append that writes before the whole call is known to fit fails the E_MEMORY and validation properties', async () => {
    const r = await run(writesBeforeCapacityCheck());
    expectFails(r, [P.memory, P.validation], [P.schedules, P.contents, P.batch, P.determinism, P.free, P.fork]);
    expect(result(r, P.memory).message).toMatch(/after the failed append of B tokens to sequence 0 and 2B to sequence 1, sequence 0: length \d+ → \d+/);
  });

  it("(e) a new sequence that inherits a freed sequence's kconv state fails the free/reuse property", async () => {
    const r = await run(staleStateOnReuse());
    expectFails(r, [P.free], [P.schedules, P.contents, P.batch, P.determinism, P.memory, P.fork, P.validation]);
    expect(result(r, P.free).message).toMatch(/kconvState|keys after kconv/);
  });

  it('(f) an attend that keeps topk − 1 blocks fails the schedules property', async () => {
    const r = await run(topkOffByOne());
    // batch invariance may go either way: the shell clamps topk to the batch's longest sequence, so topk − 1 of a
    // dense attend differs between a sequence alone and batched with a longer one
    expectFails(r, [P.schedules], [P.contents, P.determinism, P.validation]);
    expect(result(r, P.schedules).message).toMatch(/attend (out|lse): max abs error .* NOT within/);
  });
});
