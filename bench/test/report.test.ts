// The CPU bench table and its JSON carry the MoBA memory peak (memoryStats().peakBytes of each repetition) and
// whether the L2 was flushed (--flush-l2: a header line, flushed rows marked, a JSON field per run and per size).
import { createCpuBackend } from '@moba/backend-cpu';
import { describe, expect, it } from 'vitest';
import { expandFlushFlag, flushOf, judgedSizes, l2Passes } from '../l2.js';
import { type BenchResult, type SizeResult, evaluateTargets, markdownReport, textTable } from '../report.js';

const size: SizeResult = {
  T: 512, attendedFraction: 1,
  flops: { route: 1e6, mobaForward: 1e8, mobaFwdBwd: 4e8, forwardKernel: 1e8, denseForward: 1e8, denseFwdBwd: 4e8 },
  bytes: { route: 1e6, mobaForward: 3e6, mobaFwdBwd: 7e6, denseForward: 2e6, denseFwdBwd: 6e6 },
  ms: { route: 1, mobaForward: 2, mobaFwdBwd: 5, forwardKernel: 1, denseForward: 2, denseFwdBwd: 5 },
  reps: { moba: [{ route: 1, forward: 1, backward: 3, peakBytes: 6 * 2 ** 20 }, { route: 1, forward: 1, backward: 3, peakBytes: 7.5 * 2 ** 20 }], dense: null },
};
const result: BenchResult = {
  machine: { cpu: 'test cpu', cores: 2, node: 'v20', platform: 'linux x64', host: 'h', hostKind: 'test-2c', loadAverage: { start: [0, 0, 0], end: [0, 0, 0] } },
  date: '2026-12-03T00:00:00.000Z', command: 'bench', gitCommit: null, backend: { name: 'cpu', threads: 1 },
  problem: { Hq: 4, Hkv: 4, D: 64, blockSize: 64, topk: 8, dtype: 'f32', sequences: 1, reps: 2 },
  sizes: [size], scaling: null, targets: [],
};

describe('bench report: memory peak', () => {
  it('prints the largest MoBA peak of a size in MiB, in the table and the markdown', () => {
    const table = textTable(result);
    expect(table).toContain('MoBA peak MiB');
    expect(table.split('\n').find((l) => l.includes('fwd+bwd'))).toMatch(/7\.5$/);
    expect(markdownReport(result)).toMatch(/\| 7\.5 \|/);
    expect(JSON.parse(JSON.stringify(result)).sizes[0].reps.moba[1].peakBytes).toBe(7.5 * 2 ** 20);
  });
});

describe('bench report: --flush-l2', () => {
  const flushed: SizeResult = { ...size, l2Flushed: true, ms: { ...size.ms, mobaFwdBwd: 10, denseFwdBwd: 40 } };
  const both: BenchResult = { ...result, l2Flush: { mode: 'both', available: true }, sizes: [{ ...size, l2Flushed: false }, flushed] };

  it('both: a header line, the flushed rows marked, the targets judged on the flushed rows, the JSON fields', () => {
    const table = textTable({ ...both, targets: evaluateTargets(both) });
    expect(table).toContain('L2: each size twice, not flushed and flushed (rows marked "flushed": flushL2() before each timed repetition');
    const fb = table.split('\n').filter((l) => l.includes('fwd+bwd  '));
    expect(fb.map((l) => l.split(/\s{2,}/)[0])).toEqual(['512', '512, flushed']);
    expect(evaluateTargets(both)[0]!.value).toMatch(/^4\.00× /); // 40 / 10: the flushed size, not 5 / 5
    expect(markdownReport(both)).toMatch(/\| 512, flushed \| fwd\+bwd \|/);
    const json = JSON.parse(JSON.stringify(both));
    expect([json.l2Flush, json.sizes.map((s: SizeResult) => s.l2Flushed)]).toEqual([{ mode: 'both', available: true }, [false, true]]);
  });

  it('says when nothing was flushed: not asked, or a backend without flushL2 (the CPU: a no-op)', () => {
    expect(textTable(result)).toContain('L2: not flushed between repetitions (--flush-l2 to flush before each)');
    const cpu = textTable({ ...result, l2Flush: { mode: 'on', available: false } });
    expect(cpu).toContain('L2: --flush-l2 on asked, but the cpu backend has no flushL2() (a no-op there: nothing flushed, each size run once)');
    expect(textTable({ ...result, l2Flush: { mode: 'on', available: true }, sizes: [flushed] })).toMatch(/\nL2: flushed \(flushL2\(\) before each timed repetition, outside the timed region, then a device sync\)\n/);
  });

  it('the passes per size, the flag written alone, and the CPU backend (no flushL2)', async () => {
    expect([l2Passes({ mode: 'off', available: true }), l2Passes({ mode: 'on', available: true }), l2Passes({ mode: 'both', available: true }), l2Passes({ mode: 'both', available: false })])
      .toEqual([[false], [true], [false, true], [false]]);
    expect(expandFlushFlag(['--flush-l2', '--quick', '--flush-l2', 'both', '--flush-l2'])).toEqual(['--flush-l2=on', '--quick', '--flush-l2', 'both', '--flush-l2=on']);
    const sized = (xs: { T: number; l2Flushed?: boolean }[]): number[] => judgedSizes(xs).map((s) => s.T);
    expect([sized([{ l2Flushed: false, T: 1 }, { l2Flushed: true, T: 2 }]), sized([{ T: 1 }, { T: 2 }])]).toEqual([[2], [1, 2]]);
    const cpu = createCpuBackend({ threads: 1 });
    try {
      expect(flushOf(cpu)).toBeUndefined();
    } finally {
      await cpu.destroy();
    }
  });
});
