/**
 * Capabilities narrow the generators: a backend declaring little (one dtype, two head dims, causal
 * only, no kconv, not deterministic, small topk and blockSize) still passes, because nothing outside
 * its caps is asked of it (the reference backend rejects anything undeclared), and the Report lists
 * what was not covered.
 */
import { describe, expect, it } from 'vitest';
import { createReferenceBackend, runConformance } from '../src/index.js';

describe('caps narrowing', () => {
  it('a narrow backend passes and the report lists what its caps exclude', async () => {
    const caps = { dtypes: ['bf16'] as const, headDims: [16, 32], nonCausal: false, kconv: false, deterministic: false, maxTopk: 4, maxBlockSize: 8 };
    const create = () => createReferenceBackend({ name: 'narrow', caps: { ...caps, dtypes: [...caps.dtypes] } });
    const b = create();
    const r = await runConformance(b, { factory: create, numRuns: 6 });
    await b.destroy();
    expect(r.results.filter((x) => !x.ok).map((x) => `${x.group}: ${x.name}: ${x.message}`)).toEqual([]);
    expect(r.notCovered).toEqual(expect.arrayContaining([
      'dtype f32 (not in caps)', 'dtype f16 (not in caps)', 'head dims other than 16, 32 (not in caps)',
      'non-causal routing (caps.nonCausal is false)', 'kconv (not in caps)', 'determinism (caps.deterministic is false)',
      'hostile shape: head dim D = 59 (not in caps)', 'golden c05_mqa_k1_d59 (head dim 59 not in caps)',
    ]));
    const skipped = r.results.filter((x) => x.skipped).map((x) => `${x.group}: ${x.name}`);
    expect(skipped).toEqual(expect.arrayContaining([expect.stringMatching(/^kconv: /), expect.stringMatching(/^determinism: /), 'golden: c05_mqa_k1_d59.json']));
    expect(r.skipped).toBe(skipped.length);
    expect(r.passed).toBeGreaterThan(15);
  });
});
