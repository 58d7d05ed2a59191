/**
 * bench/sdpa.py and its runner without a GPU: the JSON error without torch or CUDA, and the whole dense path
 * against a stand-in torch (bench/test/fake-torch): sizes, GQA, the budget skip, an out-of-memory size.
 */
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { pyIt, python } from './python.js';
import { parseSdpaOutput, runSdpa, sdpaScript } from '../sdpa.js';

const FAKE = join(dirname(fileURLToPath(import.meta.url)), 'fake-torch');
const base = { python, batch: 2, heads: 16, kvHeads: 16, headDim: 128, dtype: 'bf16' as const, reps: 2, matmul: true, budgetS: 60 };
const withFake = (extra: Record<string, string> = {}): NodeJS.ProcessEnv => ({ ...process.env, PYTHONPATH: FAKE, PYTHONDONTWRITEBYTECODE: '1', ...extra });

describe('parseSdpaOutput', () => {
  it('takes the last JSON object line and ignores other output', () => {
    const ok = parseSdpaOutput('noise\n{"ok": true, "torch": "2.11", "cuda": "13.0", "device": "H200", "matmul": null, "sizes": [{"N": 8192, "fwdMs": 1}]}\n', { code: 0 });
    expect(ok).toMatchObject({ ok: true, torch: '2.11', device: 'H200', sizes: [{ N: 8192, fwdMs: 1 }] });
    expect(parseSdpaOutput('{"ok": false, "error": "no torch"}', { code: 0 })).toEqual({ ok: false, error: 'no torch' });
  });
  it('explains a crash, a kill and a timeout', () => {
    expect(parseSdpaOutput('', { code: 1 }, 'Traceback\nValueError: x')).toEqual({ ok: false, error: 'sdpa.py exited with code 1 without a JSON result: Traceback | ValueError: x' });
    expect(parseSdpaOutput('[1, 2]', { code: null, signal: 'SIGKILL' })).toMatchObject({ error: 'sdpa.py was killed by SIGKILL without a JSON result' });
    expect(parseSdpaOutput('', { code: null, signal: 'SIGKILL', timedOut: true }).ok).toBe(false);
    expect(parseSdpaOutput('', { code: null, timedOut: true })).toMatchObject({ error: expect.stringContaining('timed out') });
  });
});


describe('sdpa.py', () => {
  pyIt('is found beside the bench', () => expect(sdpaScript()).toMatch(/bench[/\\]sdpa\.py$/));

  pyIt('reports why when torch cannot be imported or has no CUDA', async () => {
    const none = await runSdpa({ ...base, tokens: [8192], env: { ...process.env, PYTHONPATH: join(FAKE, 'does-not-exist'), PYTHONNOUSERSITE: '1' } });
    // without the stand-in, python3 here may or may not have torch; with torch present it would need CUDA
    if (!none.ok) expect(none.error).toMatch(/torch cannot be imported|torch\.cuda\.is_available\(\) is False/);
    const noCuda = await runSdpa({ ...base, tokens: [8192], env: withFake({ FAKE_TORCH_NO_CUDA: '1' }) });
    expect(noCuda).toEqual({ ok: false, error: 'torch.cuda.is_available() is False (no CUDA device or a CPU-only torch)' });
  });

  pyIt('measures every size, skips what would overrun the budget, reports an OOM and the matmul rate', async () => {
    const lines: string[] = [];
    const r = await runSdpa({ ...base, tokens: [1024, 2048, 32768], kvHeads: 4, budgetS: 15, env: withFake(), log: (s) => lines.push(s) });
    if (!r.ok) throw new Error(r.error);
    expect(r.device).toBe('Fake GPU');
    expect(r.sizes.map((s) => s.N)).toEqual([1024, 2048, 32768]);
    expect(r.sizes[0]).toMatchObject({ reps: 2 });
    for (const s of r.sizes.slice(0, 2)) for (const ms of [s.fwdMs, s.bwdMs, s.fwdBwdMs]) expect(ms).toBeGreaterThan(0); // measured (no timing comparison: load varies)
    expect(r.sizes[2]!.skipped).toMatch(/^predicted \d+ s \(warm-up \+ 1 rep\(s\)\) exceeds/);
    expect(r.matmul?.tflopsBest).toBeGreaterThan(0);
    expect(lines.some((l) => l.includes('N=2048: fwd'))).toBe(true);
    const oom = await runSdpa({ ...base, tokens: [1024, 2048], matmul: false, env: withFake({ FAKE_TORCH_OOM_N: '2048' }) });
    if (!oom.ok) throw new Error(oom.error);
    expect(oom.matmul).toBeNull();
    expect(oom.sizes[1]).toEqual({ N: 2048, error: 'RuntimeError: CUDA out of memory. Tried to allocate 8.00 GiB (fake)' });
  });

  pyIt('a missing interpreter is an error, not a crash', async () => {
    const r = await runSdpa({ ...base, python: 'no-such-python-here', tokens: [1024] });
    expect(r).toMatchObject({ ok: false, error: expect.stringContaining('cannot run no-such-python-here') });
  });
});
