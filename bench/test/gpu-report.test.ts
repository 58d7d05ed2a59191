/**
 * The GPU bench's CUDA speed targets and tables, on hand-made results: met / MISSED / not measured for
 * fwd+bwd vs FlashMoBA (1×, 2× from 128K, 3× at 512K), forward vs dense SDPA, peak memory vs FlashMoBA.
 */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import {
  FA2_PEERS, FLASHMOBA, type GpuBenchResult, type GpuSizeResult, evaluateGpuTargets, fmRequiredSpeedup, gpuMarkdownReport, gpuTextTable, isPaperProblem, referenceRate, targetCounts,
} from '../gpu-report.js';

const K = 1024;
const GiB = 2 ** 30;

function size(N: number, fwdBwd: number | null, opts: { forward?: number; peakGiB?: number | null; status?: GpuSizeResult['status']; note?: string } = {}): GpuSizeResult {
  const forward = opts.forward ?? (fwdBwd ?? 0) / 2;
  return {
    N, T: 2 * N, status: opts.status ?? (fwdBwd === null ? 'does not fit' : 'ok'), ...(opts.note ? { note: opts.note } : {}), attendedFraction: 0.1,
    flops: { route: 1e9, forward: 1e10, backward: 2.5e10, denseForward: 1e11, denseBackward: 2.5e11 },
    ms: fwdBwd === null ? null : { route: forward / 4, attnForward: (forward * 3) / 4, forward, backward: fwdBwd - forward, fwdBwd },
    reps: [], warmup: null, peakBytes: opts.peakGiB === undefined || opts.peakGiB === null ? null : opts.peakGiB * GiB,
  };
}

function result(sizes: GpuSizeResult[], over: Partial<GpuBenchResult> = {}): GpuBenchResult {
  return {
    kind: 'moba-gpu-bench', date: '2026-11-30T00:00:00.000Z', command: 'node .device/bench.mjs --backend cuda', gitCommit: 'abc',
    machine: { host: 'h', cpu: 'c', node: 'v20', platform: 'linux x64', gpu: 'NVIDIA H200', driver: '580.159.04', device: null },
    backend: { name: 'cuda' },
    problem: { batch: 2, Hq: 16, Hkv: 16, D: 128, blockSize: 128, topk: 8, dtype: 'bf16', causal: true, reps: 5, paper: true },
    sizes,
    dense: { measured: true, torch: '2.11', cuda: '13.0', device: 'NVIDIA H200', sizes: [{ N: 8 * K, fwdMs: 1.7, bwdMs: 5, fwdBwdMs: 6.7, peakBytes: 0.75 * GiB }, { N: 512 * K, skipped: 'predicted 100 s' }] },
    rates: { tensorCore: { tflopsBest: 800, tflopsMedian: 780, n: 8192 }, fma: null },
    peersSource: 'published peer measurements', targets: [], notes: [], ...over,
  };
}

const byName = (ts: ReturnType<typeof evaluateGpuTargets>, name: string) => ts.find((t) => t.name === name);

describe('CUDA speed targets', () => {
  it('requires > 1× below 128K, 2× from 128K, 3× at 512K', () => {
    expect([8 * K, 64 * K, 128 * K, 256 * K, 512 * K].map(fmRequiredSpeedup)).toEqual([1, 1, 2, 2, 3]);
  });

  it('judges fwd+bwd vs FlashMoBA at each N', () => {
    const ts = evaluateGpuTargets(result([
      size(8 * K, 5.0), // FM 5.87: faster
      size(16 * K, 11.92), // equal: not faster
      size(128 * K, 167.68 / 2.01), // 2.01×
      size(256 * K, 502.1 / 1.9), // 1.9× < 2
      size(512 * K, 1574.82 / 3.1), // 3.1×
    ]));
    expect(byName(ts, 'fwd+bwd vs FlashMoBA, N = 8K')?.met).toBe(true);
    expect(byName(ts, 'fwd+bwd vs FlashMoBA, N = 16K')?.met).toBe(false);
    expect(byName(ts, 'fwd+bwd vs FlashMoBA, N = 128K')).toMatchObject({ met: true, target: '≥ 2× faster than FlashMoBA' });
    expect(byName(ts, 'fwd+bwd vs FlashMoBA, N = 256K')?.met).toBe(false);
    expect(byName(ts, 'fwd+bwd vs FlashMoBA, N = 512K')).toMatchObject({ met: true, target: '≥ 3× faster than FlashMoBA' });
    expect(byName(ts, 'fwd+bwd vs FlashMoBA, N = 8K')?.value).toBe('5.00 ms vs 5.87 ms = 1.17×');
  });

  it('judges forward vs dense only where dense ran in this run; else not measured with the reason', () => {
    const ts = evaluateGpuTargets(result([size(8 * K, 4, { forward: 1.5 }), size(32 * K, 20), size(512 * K, 400)]));
    expect(byName(ts, 'forward (routing included) vs dense, N = 8K')).toMatchObject({ met: true, value: '1.50 ms vs 1.70 ms = 1.13×' });
    const t32 = byName(ts, 'forward (routing included) vs dense, N = 32K')!;
    expect(t32.met).toBeNull();
    expect(t32.value).toContain('dense not measured: dense SDPA was not run at this N');
    expect(t32.note).toContain('published FA2 forward 25.08 ms');
    expect(byName(ts, 'forward (routing included) vs dense, N = 512K')?.value).toContain('predicted 100 s');
    const slow = evaluateGpuTargets(result([size(8 * K, 4, { forward: 1.7 })]));
    expect(byName(slow, 'forward (routing included) vs dense, N = 8K')?.met).toBe(false); // equal is not faster
    const none = evaluateGpuTargets(result([size(8 * K, 4)], { dense: { measured: false, reason: 'torch cannot be imported', sizes: [] } }));
    expect(byName(none, 'forward (routing included) vs dense, N = 8K')?.value).toContain('torch cannot be imported');
  });

  it('judges peak memory against FlashMoBA, not measured without accounting', () => {
    const ts = evaluateGpuTargets(result([size(8 * K, 4, { peakGiB: 0.64 }), size(16 * K, 9, { peakGiB: 1.3 }), size(32 * K, 20, { peakGiB: null })]));
    expect(byName(ts, 'peak memory vs FlashMoBA, N = 8K')?.met).toBe(true);
    expect(byName(ts, 'peak memory vs FlashMoBA, N = 16K')).toMatchObject({ met: false, target: "≤ FlashMoBA's 1.27 GiB" });
    expect(byName(ts, 'peak memory vs FlashMoBA, N = 32K')).toMatchObject({ met: null, value: 'not measured: the cuda backend does not account its allocations' });
  });

  it('a size that did not fit or was skipped is not measured; sizes below 8K have no targets; missing peers sizes are listed', () => {
    const ts = evaluateGpuTargets(result([size(1 * K, 1), size(8 * K, null, { note: 'E_MEMORY …' }), size(16 * K, null, { status: 'skipped', note: 'time' })]));
    expect(ts.some((t) => t.name.endsWith('N = 1K'))).toBe(false);
    expect(byName(ts, 'fwd+bwd vs FlashMoBA, N = 8K')).toMatchObject({ met: null, value: 'not measured: MoBA does not fit (E_MEMORY …)' });
    expect(byName(ts, 'fwd+bwd vs FlashMoBA, N = 16K')?.value).toBe('not measured: MoBA skipped (time)');
    expect(byName(ts, 'published peer sizes not in this run')?.value).toBe('not measured: 32K, 64K, 128K, 256K, 512K');
    expect(targetCounts(ts).met).toBe(0);
  });

  it('does not compare with FlashMoBA outside the paper configuration', () => {
    const r = result([size(8 * K, 1, { peakGiB: 0.1 })], { problem: { batch: 2, Hq: 2, Hkv: 2, D: 128, blockSize: 128, topk: 8, dtype: 'bf16', causal: true, reps: 1, paper: false } });
    expect(isPaperProblem(r.problem)).toBe(false);
    const ts = evaluateGpuTargets(r);
    expect(byName(ts, 'fwd+bwd vs FlashMoBA, N = 8K')).toMatchObject({ met: null });
    expect(byName(ts, 'fwd+bwd vs FlashMoBA, N = 8K')?.note).toContain('differs from the paper configuration');
    expect(byName(ts, 'peak memory vs FlashMoBA, N = 8K')?.met).toBeNull();
  });

  it('embeds the published peer rows exactly (checked against the shared copy when present)', (t) => {
    expect(Object.keys(FLASHMOBA).map(Number)).toEqual([8, 16, 32, 64, 128, 256, 512].map((k) => k * K));
    const file = join(process.env.MOBA_SHARED ?? join(dirname(fileURLToPath(import.meta.url)), '../../../shared'), 'bench/peers.md');
    if (!existsSync(file)) return t.skip(`${file} not found`);
    const rows = readFileSync(file, 'utf8').split('\n').filter((l) => /^\| \d+K \|/.test(l));
    expect(rows).toHaveLength(7);
    for (const row of rows) {
      const [n, ...v] = row.split('|').map((c) => c.trim()).filter(Boolean);
      const N = Number(n!.replace('K', '')) * K;
      const x = v.map(Number);
      expect(FLASHMOBA[N]).toEqual({ fwd: x[0], routing: x[1], attnFwd: x[2], bwd: x[3], fwdBwd: x[4], peakGiB: x[5] });
      expect(FA2_PEERS[N]).toEqual({ fwd: x[6], bwd: x[7], fwdBwd: x[8], peakGiB: x[9] });
    }
  });
});

describe('WebGPU speed targets', () => {
  const webgpu = (sizes: GpuSizeResult[], dense: GpuBenchResult['dense']['sizes'], fma: GpuBenchResult['rates']['fma']) =>
    evaluateGpuTargets(result(sizes, { backend: { name: 'webgpu' }, dense: { measured: true, sizes: dense }, rates: { tensorCore: null, fma } }));
  const fma = { gflopsMedian: 50000, gflopsBest: 55000, msMedian: 10, invocations: 1, iterations: 1, flopsPerDispatch: 1, runs: 5, chains: 8, unroll: 8, sample: 1 };
  it('judges fwd+bwd against dense SDPA of the same run at 128K (≥ 2×) and reports the forward rate against the FMA peak', () => {
    const ts = webgpu([size(128 * K, 700, { forward: 200 })], [{ N: 128 * K, fwdMs: 400, bwdMs: 1100, fwdBwdMs: 1500 }], fma);
    expect(ts).toHaveLength(2);
    expect(byName(ts, 'fwd+bwd vs dense SDPA, N = 128K')).toMatchObject({ met: true, value: '700.0 ms vs 1500.0 ms = 2.14×' });
    // (1e9 + 1e10) FLOP in 200 ms = 0.055 TFLOP/s, 0.1% of 55 TFLOP/s
    expect(byName(ts, 'forward f32 rate as a fraction of the FMA peak, N = 128K')).toMatchObject({ met: true, value: '0.06 TFLOP/s = 0.1% of 55.00 TFLOP/s' });
    const slow = webgpu([size(128 * K, 800)], [{ N: 128 * K, fwdBwdMs: 1500 }], fma);
    expect(byName(slow, 'fwd+bwd vs dense SDPA, N = 128K')?.met).toBe(false);
  });
  it('is not measured without 128K, without dense at 128K or without the FMA peak, with the reason', () => {
    const none = webgpu([size(64 * K, 300)], [], fma);
    expect(none.map((t) => [t.met, t.value])).toEqual([[null, 'not measured: N = 128K not in this run'], [null, 'not measured: N = 128K not in this run']]);
    const noDense = webgpu([size(128 * K, 700)], [{ N: 128 * K, skipped: 'predicted 100 s' }], null);
    expect(noDense[0]).toMatchObject({ met: null, value: '700.0 ms; dense not measured: predicted 100 s' });
    expect(noDense[1]).toMatchObject({ met: null, value: 'not measured: no FMA peak' });
    const notFit = webgpu([size(128 * K, null, { status: 'does not fit', note: 'E_MEMORY' })], [], fma);
    expect(notFit[0]?.value).toBe('not measured: MoBA does not fit (E_MEMORY)');
  });
});

describe('tables', () => {
  it('print every size, the reference rate and each target with its status', () => {
    const r0 = result([size(8 * K, 5, { peakGiB: 0.5 }), size(16 * K, null, { note: 'E_MEMORY' })]);
    const r = { ...r0, targets: evaluateGpuTargets(r0) };
    const text = gpuTextTable(r);
    expect(text).toContain('tensor-core rate (torch bf16 8192³ matmul, same run): 800.0 TFLOP/s best');
    expect(text).toMatch(/^8K\s+0\.63/m);
    expect(text).toMatch(/^16K\s+does not fit\s+–/m);
    expect(text).toContain('note: N = 16K, MoBA does not fit: E_MEMORY');
    expect(text).toContain('note: N = 512K, dense skipped: predicted 100 s');
    expect(text).toContain('[met] fwd+bwd vs FlashMoBA, N = 8K');
    expect(text).toContain('[not measured] peak memory vs FlashMoBA, N = 16K');
    const md = gpuMarkdownReport(r);
    expect(md).toContain('Command: `node .device/bench.mjs --backend cuda`');
    expect(md).toContain('| 8K | 1.70 | 5.00 | 6.70 | 0.75 |');
    expect(md).toContain('## Targets (CUDA)');
    expect(referenceRate(r)?.what).toBe('bf16 tensor-core matmul');
  });
  it('say why SDPA and the tensor-core rate were not measured; WebGPU uses the FMA peak', () => {
    const r = result([size(8 * K, 5)], {
      backend: { name: 'webgpu' },
      dense: { measured: false, reason: 'torch cannot be imported (ModuleNotFoundError)', sizes: [] },
      rates: {
        tensorCore: null, tensorCoreNote: 'torch cannot be imported', fma: {
          gflopsBest: 50000, gflopsMedian: 48000, msMedian: 100, invocations: 1 << 20, iterations: 1000, flopsPerDispatch: 1, runs: 5, chains: 8, unroll: 8, sample: 8,
        },
      },
    });
    const text = gpuTextTable(r);
    expect(text).toContain('SDPA not measured: torch cannot be imported (ModuleNotFoundError)');
    expect(text).toContain('tensor-core rate: not measured: torch cannot be imported');
    expect(text).toContain('50.00 TFLOP/s best');
    expect(text).toContain('% of FMA peak');
    expect(referenceRate(r)).toEqual({ tflops: 50, what: 'f32 FMA peak (WGSL)' });
  });
  it('--flush-l2 both: a header line, flushed rows marked in both tables, CUDA targets judged on the flushed rows, JSON fields', () => {
    const r = result([{ ...size(8 * K, 6.5), l2Flushed: false }, { ...size(8 * K, 5), l2Flushed: true }], { l2Flush: { mode: 'both', available: true } });
    const ts = evaluateGpuTargets(r);
    expect(ts.filter((t) => t.name === 'fwd+bwd vs FlashMoBA, N = 8K').map((t) => [t.value, t.met])).toEqual([['5.00 ms vs 5.87 ms = 1.17×', true]]);
    const text = gpuTextTable({ ...r, targets: ts });
    expect(text).toContain('L2: each size twice, not flushed and flushed (rows marked "flushed"');
    expect(text.match(/^8K, flushed\s+\S/gm)).toHaveLength(2); // the MoBA table and the comparison table
    expect(text.match(/^8K\s+\d/gm)).toHaveLength(2);
    expect(gpuMarkdownReport(r)).toMatch(/\| 8K, flushed \| 0\.63 \|/);
    expect(gpuTextTable(result([size(8 * K, 5)]))).toContain('L2: not flushed between repetitions (--flush-l2 to flush before each)');
    const json = JSON.parse(JSON.stringify(r));
    expect([json.l2Flush.mode, json.sizes.map((s: GpuSizeResult) => s.l2Flushed)]).toEqual(['both', [false, true]]);
  });
});
