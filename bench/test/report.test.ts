// The CPU bench table and its JSON carry the MoBA memory peak (memoryStats().peakBytes of each repetition).
import { describe, expect, it } from 'vitest';
import { type BenchResult, type SizeResult, markdownReport, textTable } from '../report.js';

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
