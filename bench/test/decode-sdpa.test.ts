/**
 * The decode bench's torch side without a GPU: sdpa-decode.py's JSON read and joined to the rows, the table and
 * markdown with and without torch, the script's --dry-run (rows, bytes, the memory skip) and its answer without
 * torch, and the bench's own memory-skip decision.
 */
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { pyIt, python } from './python.js';
import { parseDecodeFlags } from '../decode-args.js';
import { type DecodeCase, type DecodeResult, decodeMarkdown, decodeTable, slopeCopy } from '../decode-report.js';
import { type TorchDecode, joinTorch, notMeasuredWhy, parseTorchDecode, runTorchDecode, torchDecodeArgs } from '../decode-sdpa.js';
import { memorySkip } from '../decode.js';
import { lastJsonObject, sdpaScript } from '../sdpa.js';

const K = 1024;
const GiB = 2 ** 30;

const plan = { bytes: { total: 2 * 2 ** 20 }, denseBytes: 40 * 2 ** 20, flops: { route: 1, attend: 1 } } as unknown as Extract<DecodeCase, { plan: unknown }>['plan'];
const measuredCase = (N: number, batch: number, attendMs: number): DecodeCase => ({
  Hq: 16, Hkv: 16, N, batch, length: N + 26, attendMs, stepMs: attendMs * 1.5, reps: { attend: [attendMs], step: [attendMs * 1.5] }, plan, dense: { attendMs: attendMs * 10, reps: [attendMs * 10] },
});
const cases: DecodeCase[] = [measuredCase(8 * K, 1, 0.02), measuredCase(8 * K, 16, 0.05), { Hq: 16, Hkv: 16, N: 1024 * K, batch: 64, skipped: 'memory: needs 520.0 GiB' }];

const torchJson = {
  ok: true, torch: '2.11.0+cu130', cuda: '13.0', device: 'NVIDIA H200', reps: 10, warmup: 3, seconds: 12.5,
  copy: { bytes: 4 * GiB, msBest: 1.01, msMedian: 1.02, bytesPerSecondBest: 4.25e12, bytesPerSecondMedian: 4.2e12, how: 'torch dst.copy_(src) of 2048 MiB', after: { bytesPerSecondBest: 3.8e12, bytesPerSecondMedian: 3.79e12 } },
  rows: [
    { Hq: 16, Hkv: 16, N: 8 * K, batch: 1, bytesNeeded: 67117056, bestMs: 0.043, best: 'default', backends: { default: 0.043, flash: 0.079, efficient: 0.317, cudnn: 0.074 } },
    { Hq: 16, Hkv: 16, N: 8 * K, batch: 16, bytesNeeded: 1073872896, bestMs: 0.25, best: 'cudnn', backends: { default: 0.252, flash: 0.429, efficient: null, cudnn: 0.25 }, errors: { efficient: 'RuntimeError: no kernel' } },
    { Hq: 16, Hkv: 16, N: 1024 * K, batch: 64, bytesNeeded: 549756338176, skipped: 'memory: needs 512.0 GiB + 1 GiB slack, 139.0 GiB free' },
  ],
};

function result(t: TorchDecode): DecodeResult {
  const base = {
    machine: { hostKind: 'h' }, date: '2026-12-03T00:00:00.000Z', command: 'node .device/bench.mjs --decode', gitCommit: 'abc',
    backend: { name: 'cuda' }, problem: { D: 128, blockSize: 128, topk: 8, dtype: 'bf16', reps: 10 },
    copy: { bytesPerSecond: 4.1e12, singleBytesPerSecond: 3.9e12, how: 'device copies of 1024 and 2048 MiB (host-timed): slope' }, prefill: [],
    readBandwidth: { bytesPerSecond: null, how: 'not measured: the cuda backend has no read probe (timeDeviceRead)' },
  };
  return { ...base, ...joinTorch(cases, t) };
}

describe('parseTorchDecode and joinTorch', () => {
  it('reads the last JSON line and joins every row by (heads, N, batch): best, per-backend times, skips', () => {
    const t = parseTorchDecode(`progress\n${JSON.stringify(torchJson)}\n`, { code: 0 });
    if (!t.ok) throw new Error(t.error);
    expect([t.torch, t.device, t.reps, t.rows.length]).toEqual(['2.11.0+cu130', 'NVIDIA H200', 10, 3]);
    const { cases: joined, torch } = joinTorch(cases, t);
    expect(torch).toMatchObject({ measured: true, torch: '2.11.0+cu130', copy: { bytesPerSecondBest: 4.25e12 } });
    expect(joined.map((c) => c.sdpa)).toEqual([
      { ms: 0.043, best: 'default', backends: { default: 0.043, flash: 0.079, efficient: 0.317, cudnn: 0.074 } },
      { ms: 0.25, best: 'cudnn', backends: { default: 0.252, flash: 0.429, efficient: null, cudnn: 0.25 }, errors: { efficient: 'RuntimeError: no kernel' } },
      { skipped: 'memory: needs 512.0 GiB + 1 GiB slack, 139.0 GiB free' },
    ]);
    const other = joinTorch([measuredCase(32 * K, 1, 0.1)], t).cases[0]!.sdpa;
    expect(other).toEqual({ notMeasured: 'no such row in the torch output' });
  });
  it('errors, crashes and a dry run are "not measured", never a number', () => {
    expect(parseTorchDecode('{"ok": false, "error": "torch cannot be imported (ModuleNotFoundError: x)"}', { code: 0 })).toEqual({ ok: false, error: 'torch cannot be imported (ModuleNotFoundError: x)' });
    expect(parseTorchDecode('', { code: 1 }, 'Traceback\nKeyError: x')).toEqual({ ok: false, error: 'sdpa-decode.py exited with code 1 without a JSON result: Traceback | KeyError: x' });
    expect(parseTorchDecode('{"ok": true, "dryRun": true, "rows": []}', { code: 0 }).ok).toBe(false);
    expect(lastJsonObject('[1]\n{"a": 1}\nnot json')).toEqual({ a: 1 });
    expect(['--no-torch', 'cannot run python9: spawn ENOENT', 'torch cannot be imported (x)', 'torch.cuda.is_available() is False (no CUDA)', 'sdpa-decode.py was killed by SIGKILL'].map(notMeasuredWhy))
      .toEqual(['--no-torch', 'torch unavailable', 'torch unavailable', 'torch has no CUDA', 'torch failed']);
    const { cases: joined, torch } = joinTorch(cases, { ok: false, error: 'torch cannot be imported (x)' });
    expect(torch).toEqual({ measured: false, reason: 'torch cannot be imported (x)' });
    expect(joined.every((c) => JSON.stringify(c.sdpa) === '{"notMeasured":"torch unavailable"}')).toBe(true);
  });
});

describe('decode table and markdown with the torch side', () => {
  it('SDPA dense ms (best backend), vs SDPA = SDPA / attend, every backend; skipped rows keep their SDPA cells', () => {
    const txt = decodeTable(result(parseTorchDecode(JSON.stringify(torchJson), { code: 0 })));
    expect(txt).toContain('SDPA ms (default / flash / efficient / cudnn)');
    expect(txt).toMatch(/0\.043 \(default\)\s+2\.1×\s+0\.043 \/ 0\.079 \/ 0\.317 \/ 0\.074/); // 0.043 / 0.02
    expect(txt).toMatch(/0\.250 \(cudnn\)\s+5\.0×\s+0\.252 \/ 0\.429 \/ n\/a \/ 0\.250/);
    expect(txt).toMatch(/skipped \(memory: needs 520\.0 GiB\).*skipped \(memory: needs 512\.0 GiB \+ 1 GiB slack/);
    expect(txt).toContain('torch 2.11.0+cu130 (CUDA 13.0) on NVIDIA H200');
    expect(txt).toContain('torch copy bandwidth 4250.0 GB/s best, 4200.0 median (torch dst.copy_(src) of 2048 MiB), 3800.0 best after the rows');
    expect(txt).toContain('copy bandwidth 4100.0 GB/s (device copies of 1024 and 2048 MiB (host-timed): slope; one copy with its fixed cost 3900.0 GB/s)');
    const md = decodeMarkdown(result(parseTorchDecode(JSON.stringify(torchJson), { code: 0 })));
    expect(md).toContain('| SDPA dense ms | vs SDPA | SDPA ms (default / flash / efficient / cudnn) |');
    expect(md).toContain('| 0.043 (default) | 2.1× | 0.043 / 0.079 / 0.317 / 0.074 |');
  });
  it('without torch every SDPA cell says why and no number appears there', () => {
    const r = result({ ok: false, error: 'torch cannot be imported (ModuleNotFoundError: No module named torch)' });
    const txt = decodeTable(r);
    expect(txt).toContain('torch SDPA dense decode: not measured (torch cannot be imported');
    expect(txt.split('\n').filter((l) => l.includes('not measured: torch unavailable'))).toHaveLength(3);
    expect(decodeMarkdown(r)).toMatch(/\| not measured: torch unavailable \| {2}\| {2}\|$/m);
    expect(JSON.parse(JSON.stringify(r)).torch).toEqual({ measured: false, reason: 'torch cannot be imported (ModuleNotFoundError: No module named torch)' });
  });
});

describe('memorySkip', () => {
  const g = { Hq: 16, Hkv: 16, D: 128, B: 128, dtype: 'bf16' as const };
  it('counts K, V and the f32 sums and centroids of every page, plus working set and slack', () => {
    const tokens = 16 * 4098 * 128; // 512K batch 16 (poolTokens)
    const pool = 16 * 4098 * (2 * 128 * 2048 * 2 + 2 * 2048 * 4);
    expect(memorySkip(g, tokens, 16, 8192, { bytes: 1.02 * pool + 2 ** 29, source: 'caps' })).toBeNull();
    const why = memorySkip(g, tokens, 16, 8192, { bytes: pool, source: '--memory-gb' });
    expect(why).toMatch(/^memory: needs 6\d\.\d GiB \(a pool of 65568 pages, 6\d\.\d GiB, \+ working set and slack\) > 6\d\.\d GiB \(--memory-gb\)$/);
    const oneM64 = memorySkip(g, 64 * 8194 * 128, 64, 8192, { bytes: 139 * GiB, source: 'the cuda backend\'s caps.memoryBytes' });
    expect(oneM64).toMatch(/needs 5\d\d\.\d GiB .* > 139\.0 GiB \(the cuda backend's caps\.memoryBytes\)/);
  });
});

describe('sdpa-decode.py', () => {
  const f = parseDecodeFlags(['--decode', '--backend', 'cuda', '--contexts', '8K,1M', '--batch', '1,64', '--reps', '5'], '/r');
  if (typeof f === 'string') throw new Error(f);
  pyIt('--dry-run lists every row with its bytes and, given the free memory, the skips', () => {
    const out = execFileSync(python, [sdpaScript('sdpa-decode.py'), ...torchDecodeArgs(f), '--dry-run', '--free-bytes', String(139 * GiB)], { encoding: 'utf8' });
    const r = lastJsonObject(out) as { rows: { Hq: number; N: number; batch: number; bytesNeeded: number; skipped?: string }[] };
    expect(r.rows.map((x) => `${x.Hq}:${x.N / K}:${x.batch}`)).toEqual(['16:8:1', '16:8:64', '16:1024:1', '16:1024:64', '32:8:1', '32:8:64', '32:1024:1', '32:1024:64']);
    expect(r.rows[0]!.bytesNeeded).toBe(2 * 16 * 8192 * 128 * 2 + 2 * 16 * 128 * 2);
    expect(r.rows.filter((x) => x.skipped).map((x) => `${x.Hq}:${x.N / K}:${x.batch}`)).toEqual(['16:1024:64', '32:1024:64']);
    expect(r.rows[3]!.skipped).toBe('memory: needs 512.0 GiB + 1 GiB slack, 139.0 GiB free');
    expect(execFileSync(python, [sdpaScript('sdpa-decode.py'), '--help'], { encoding: 'utf8' })).toContain('--dry-run');
  });
  pyIt('without torch (or with --no-torch) the bench gets a reason, not numbers', async () => {
    const none = await runTorchDecode(f, { env: { ...process.env, PYTHONPATH: join(sdpaScript(), '..', 'no-such-dir'), PYTHONNOUSERSITE: '1' } });
    // python3 here may or may not have torch; with torch it would need CUDA
    if (!none.ok) expect(notMeasuredWhy(none.error)).toMatch(/torch unavailable|torch has no CUDA/);
    expect(await runTorchDecode({ ...f, torch: false })).toEqual({ ok: false, error: '--no-torch' });
    expect(await runTorchDecode({ ...f, python: 'no-such-python-here' })).toMatchObject({ ok: false, error: expect.stringContaining('cannot run no-such-python-here') });
  });
});

describe('slopeCopy', () => {
  it('read + write bytes over the difference of the bests: a fixed cost per timing cancels', async () => {
    const unit = 2 ** 30;
    const seen: number[] = [];
    const time = async (n: number): Promise<number> => {
      seen.push(n);
      return 0.04 + n * 0.5 + (seen.length % 3) * 0.01; // ms: fixed cost, 0.5 ms per unit, jitter the best removes
    };
    const c = await slopeCopy(time, unit, 1, 2, 'copies');
    expect(seen.length).toBe(16);
    expect(c.bytesPerSecond).toBeCloseTo((2 * unit) / 0.5e-3, -6);
    expect(c.singleBytesPerSecond).toBeCloseTo((4 * unit) / 1.04e-3, -6);
    expect(c.how).toBe('copies: read + write bytes over the difference of the best of 7 of 2 and of 1 (fixed cost cancelled)');
    const flat = await slopeCopy(async () => 1, unit, 1, 3, 'flat');
    expect(flat).toEqual({ bytesPerSecond: (6 * unit) / 1e-3, singleBytesPerSecond: (6 * unit) / 1e-3, how: 'flat: best of 7 of 3 (the 1-unit copy was not faster), read + write counted' });
  });
});
