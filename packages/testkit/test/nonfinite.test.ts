// The non-finite properties' row-set rule (properties/nonfinite.ts): exact by default, and with caps.nonFinite
// 'block' the required rows plus at most the allowed ones; the reference backend passes them.
import { describe, expect, it } from 'vitest';
import { rowSetErrors } from '../src/properties/nonfinite.js';
import { createReferenceBackend, runConformance } from '../src/index.js';

describe('non-finite row sets', () => {
  const ref = [1, 1, NaN, 1, 1, 1]; // rows of width 2: row 1 non-finite
  it('exact: a missing or an extra non-finite row is reported', () => {
    expect(rowSetErrors('out', [1, 1, NaN, 0, 1, 1], ref, 2, 1)).toEqual([]);
    expect(rowSetErrors('out', [1, 1, 1, 1, 1, 1], ref, 2, 1)).toHaveLength(1);
    expect(rowSetErrors('out', [1, 1, NaN, 1, Infinity, 1], ref, 2, 1)).toHaveLength(1);
  });
  it("'block': extra rows only where allowed, the required ones still required", () => {
    const allowed = [1, 1, NaN, 1, NaN, 1];
    expect(rowSetErrors('out', [1, 1, NaN, 1, Infinity, 1], ref, 2, 1, allowed)).toEqual([]);
    expect(rowSetErrors('out', [NaN, 1, NaN, 1, 1, 1], ref, 2, 1, allowed)).toHaveLength(1);
    expect(rowSetErrors('out', [1, 1, 1, 1, NaN, 1], ref, 2, 1, allowed)).toHaveLength(1);
  });
  it('the reference backend passes the non-finite properties', async () => {
    const r = await runConformance(createReferenceBackend(), { only: ['non-finite'] });
    expect(r.failed, r.results.map((x) => x.message ?? '').join('\n')).toBe(0);
    expect(r.passed).toBe(3);
  });
});
