import { it, expect } from 'vitest';
import { runConformance } from '../src/index.js';
import { createReferenceBackend } from '../src/reference-backend.js';
it('soak', async () => {
  const bad: string[] = [];
  for (const seed of [1, 2, 3]) {
    const b = createReferenceBackend();
    const r = await runConformance(b, { only: ['cache: '], numRuns: 60, seed });
    await b.destroy();
    bad.push(...r.results.filter((x) => !x.ok).map((x) => `${seed} ${x.name}\n${x.message}`));
  }
  expect(bad).toEqual([]);
}, 600_000);
