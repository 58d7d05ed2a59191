import { it, expect } from 'vitest';
import { runConformance } from '../src/index.js';
// @ts-ignore
import { createCpuBackend } from '/work/wt-cpu-cache/packages/backend-cpu/src/index.ts';
it('cpu cache', async () => {
  const bad: string[] = [];
  for (const seed of [20260101, 1, 2]) {
    const b = createCpuBackend({ threads: 1 });
    const r = await runConformance(b, { only: ['cache: '], numRuns: 12, seed });
    await b.destroy();
    console.log(seed, r.results.map((x) => `${x.ok ? (x.skipped ? 'SKIP' : 'ok') : 'FAIL'} ${x.name.slice(0, 40)} ${x.ms}ms`).join('\n'));
    bad.push(...r.results.filter((x) => !x.ok).map((x) => `${seed} ${x.name}\n${x.message}`));
  }
  expect(bad).toEqual([]);
}, 600_000);
