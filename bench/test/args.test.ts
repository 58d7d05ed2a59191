/**
 * The bench's flags: the CPU bench keeps its flags and defaults; the GPU bench (--backend cuda|webgpu or
 * --paper) has the paper's configuration with per-backend sizes and overrides.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { PAPER_TOKENS, UsageError, benchMode, kLabel, parseCpuFlags, parseGpuFlags, size } from '../args.js';

const K = 1024;

describe('benchMode', () => {
  it('runs the CPU bench by default and for cpu/auto, the GPU bench for cuda, webgpu and --paper', () => {
    expect(benchMode([])).toBe('cpu');
    expect(benchMode(['--', '--backend', 'cpu', '--quick'])).toBe('cpu');
    expect(benchMode(['--backend=auto'])).toBe('cpu');
    expect(benchMode(['--backend', 'cuda'])).toBe('gpu');
    expect(benchMode(['--', '--backend=webgpu'])).toBe('gpu');
    expect(benchMode(['--backend', 'cpu', '--paper', '--tokens', '1K'])).toBe('gpu');
    expect(benchMode(['--tokens', 'cuda'])).toBe('cpu'); // a value is not a backend
    expect(benchMode(['--backend', 'cuda', '--help'])).toBe('help');
  });
});

describe('parseCpuFlags (unchanged behaviour)', () => {
  it('has the CPU defaults', () => {
    expect(parseCpuFlags([], '/r')).toEqual({
      backend: 'cpu', tokens: [2048, 4096, 8192, 16384], heads: 4, headDim: 64, blockSize: 64, topk: 8, dtype: 'f32', reps: 3,
      seed: 1, quick: false, dense: true, scaling: true, flushL2: 'off', out: '/r', write: true,
    });
  });
  it('--quick picks 2K, 4K and 2 reps unless given', () => {
    const f = parseCpuFlags(['--', '--quick'], '/r');
    expect(typeof f !== 'string' && [f.tokens, f.reps]).toEqual([[2048, 4096], 2]);
    const g = parseCpuFlags(['--quick', '--tokens=1K', '--reps', '5'], '/r');
    expect(typeof g !== 'string' && [g.tokens, g.reps]).toEqual([[1024], 5]);
  });
  it('rejects GPU-bench flags, bad values and unknown flags', () => {
    expect(() => parseCpuFlags(['--batch', '2'], '/r')).toThrow(UsageError);
    expect(() => parseCpuFlags(['--heads', '6', '--kv-heads', '4'], '/r')).toThrow(/not a multiple/);
    expect(() => parseCpuFlags(['--dtype', 'f64'], '/r')).toThrow(/--dtype f64 is invalid/);
    expect(() => parseCpuFlags(['--out'], '/r')).toThrow(/--out needs a value/);
    expect(parseCpuFlags(['-h'], '/r')).toBe('help');
  });
});

describe('parseGpuFlags', () => {
  it('CUDA: the paper configuration at 8K … 512K, 5 reps', () => {
    const f = parseGpuFlags(['--backend', 'cuda'], '/r');
    if (typeof f === 'string') throw new Error('help');
    expect(f.tokens).toEqual([8, 16, 32, 64, 128, 256, 512].map((k) => k * K));
    expect([f.batch, f.heads, f.kvHeads, f.headDim, f.blockSize, f.topk, f.dtype, f.reps]).toEqual([2, 16, 16, 128, 128, 8, 'bf16', 5]);
    expect([f.dense, f.denseMax, f.matmul, f.fma, f.python, f.timeLimitS, f.out, f.write]).toEqual([true, null, true, true, 'python3', 500, '/r', true]);
  });
  it('WebGPU: 8K … 128K and 3 reps; cpu: a tiny smoke preset', () => {
    const w = parseGpuFlags(['--backend=webgpu'], '/r');
    expect(typeof w !== 'string' && [w.tokens, w.reps]).toEqual([[...PAPER_TOKENS.webgpu], 3]);
    const c = parseGpuFlags(['--backend', 'cpu', '--paper'], '/r');
    expect(typeof c !== 'string' && [c.tokens, c.reps]).toEqual([[1024, 2048], 2]);
  });
  it('takes overrides; tokens sorted and deduplicated; --heads sets Hkv unless --kv-heads', () => {
    const f = parseGpuFlags(['--backend', 'cpu', '--paper', '--tokens', '2K,1K,2K', '--heads', '2', '--reps', '1', '--threads', '1'], '/r');
    expect(typeof f !== 'string' && [f.tokens, f.heads, f.kvHeads, f.reps, f.threads]).toEqual([[1024, 2048], 2, 2, 1, 1]);
    const g = parseGpuFlags(['--backend', 'cuda', '--heads', '16', '--kv-heads', '4', '--dense-max', '128K', '--time-limit', '300.5'], '/r');
    expect(typeof g !== 'string' && [g.heads, g.kvHeads, g.denseMax, g.timeLimitS]).toEqual([16, 4, 128 * K, 300.5]);
    const w = parseGpuFlags(['--backend', 'webgpu', '--memory-gb', '40'], '/r');
    expect(typeof w !== 'string' && w.memoryGb).toBe(40);
    expect(typeof g !== 'string' && g.memoryGb).toBe(96);
  });
  it('--quick, --no-torch, --no-dense, --no-fma, --python, $OUT and $MOBA_PYTHON', () => {
    const q = parseGpuFlags(['--backend', 'cuda', '--quick'], '/r');
    expect(typeof q !== 'string' && [q.tokens, q.reps]).toEqual([[8 * K, 32 * K], 2]);
    const n = parseGpuFlags(['--backend', 'cuda', '--no-torch', '--no-fma'], '/r', { OUT: '/out', MOBA_PYTHON: '/usr/bin/py' });
    expect(typeof n !== 'string' && [n.dense, n.matmul, n.fma, n.out, n.python]).toEqual([false, false, false, '/out', '/usr/bin/py']);
    const d = parseGpuFlags(['--backend', 'webgpu', '--no-dense', '--python', 'python3.12', '--out', 'x'], '/r', { OUT: '/out' }, (p) => `/abs/${p}`);
    expect(typeof d !== 'string' && [d.dense, d.matmul, d.python, d.out]).toEqual([false, true, 'python3.12', '/abs/x']);
  });
  it('rejects bad values and unknown flags', () => {
    expect(() => parseGpuFlags(['--backend', 'cuda', '--tokens', '8K,x'], '/r')).toThrow(/--tokens x is invalid/);
    expect(() => parseGpuFlags(['--backend', 'cuda', '--time-limit', '0'], '/r')).toThrow(/--time-limit 0 is invalid/);
    expect(() => parseGpuFlags(['--backend', 'webgpu', '--memory-gb', '0'], '/r')).toThrow(/--memory-gb 0 is invalid/);
    expect(() => parseGpuFlags(['--backend', 'cuda', '--heads', '6', '--kv-heads', '4'], '/r')).toThrow(/not a multiple/);
    expect(() => parseGpuFlags(['--backend', 'cuda', '--no-scaling'], '/r')).toThrow(/unknown flag --no-scaling/);
    expect(() => parseGpuFlags(['--backend', 'metal'], '/r')).toThrow(/--backend metal is invalid/);
    expect(parseGpuFlags(['--backend', 'cuda', '--help'], '/r')).toBe('help');
  });
});

describe('--flush-l2', () => {
  it('alone means on (last or before another flag), takes both / on / off, in both benches; default off', () => {
    const cpu = (argv: string[]) => { const f = parseCpuFlags(argv, '/r'); return typeof f === 'string' ? f : [f.flushL2, f.tokens]; };
    const gpu = (argv: string[]) => { const f = parseGpuFlags(['--backend', 'cuda', ...argv], '/r'); return typeof f === 'string' ? f : [f.flushL2, f.tokens]; };
    expect(cpu([])).toEqual(['off', [2048, 4096, 8192, 16384]]);
    expect(cpu(['--flush-l2'])[0]).toBe('on');
    expect(cpu(['--flush-l2', '--tokens', '1K'])).toEqual(['on', [1024]]);
    expect(cpu(['--flush-l2', 'both', '--tokens=1K'])).toEqual(['both', [1024]]);
    expect(gpu(['--flush-l2=both', '--quick'])).toEqual(['both', [8 * K, 32 * K]]);
    expect(gpu(['--tokens', '8K', '--flush-l2'])).toEqual(['on', [8 * K]]);
    expect(gpu(['--flush-l2', 'off'])[0]).toBe('off');
    expect(gpu([])[0]).toBe('off');
    expect(benchMode(['--flush-l2', '--backend', 'cuda'])).toBe('gpu');
    expect(benchMode(['--backend', 'cpu', '--flush-l2'])).toBe('cpu');
  });
  it('any other value is a usage error naming the flag and the allowed values', () => {
    for (const bad of ['flushed', 'yes', '2K', '']) {
      expect(() => parseCpuFlags(['--flush-l2', bad], '/r'), bad).toThrow(UsageError);
      expect(() => parseGpuFlags(['--backend', 'cuda', `--flush-l2=${bad}`], '/r'), bad).toThrow(UsageError);
    }
    expect(() => parseGpuFlags(['--backend', 'cuda', '--flush-l2', 'flushed'], '/r')).toThrow(/--flush-l2 flushed is invalid: must be one of off, on, both/);
  });
});

describe('sizes', () => {
  it('parses K suffixes and labels sizes', () => {
    expect(size('tokens', '8K')).toBe(8192);
    expect(size('tokens', '100')).toBe(100);
    expect(() => size('tokens', '0')).toThrow(UsageError);
    expect([kLabel(524288), kLabel(1000)]).toEqual(['512K', '1000']);
  });
});

describe('flag values and outputs', () => {
  it('integer flags reject non-integers, out-of-range and absurd values; unknown flags get a suggestion', () => {
    for (const argv of [['--reps', '1.5'], ['--reps', '99999999999999999999'], ['--threads', '0'], ['--tokens', '1e3'], ['--seed', '-3'], ['--reps', '1000000']]) {
      expect(() => parseCpuFlags(argv, '/r'), argv.join(' ')).toThrow(new RegExp(`--${argv[0]!.slice(2)} ${argv[1]!.replace('.', '\\.')} is invalid`));
    }
    expect(() => parseGpuFlags(['--backend', 'cuda', '--batch', '2.5'], '/r')).toThrow(/--batch 2\.5 is invalid/);
    expect(() => parseCpuFlags(['--tokkens', '8K'], '/r')).toThrow(/unknown flag --tokkens \(did you mean --tokens\?\)/);
    expect(() => parseCpuFlags(['--tokens'], '/r')).toThrow(/--tokens needs a value/);
    expect(parseCpuFlags(['--version'], '/r')).toBe('version');
  });

  it('an --out that cannot be written is a usage error before any measurement', async () => {
    const root = fileURLToPath(new URL('../..', import.meta.url));
    const file = join(mkdtempSync(join(tmpdir(), 'moba-bench-')), 'a-file');
    writeFileSync(file, '');
    const r = await new Promise<{ code: number; stdout: string; stderr: string }>((done) => {
      execFile(process.execPath, ['--conditions=@moba/source', '--import', 'tsx', 'bench/run.ts', '--quick', '--no-dense', '--no-scaling', '--out', join(file, 'sub')],
        { cwd: root }, (e, stdout, stderr) => done({ code: e ? (e as { code?: number }).code ?? 1 : 0, stdout, stderr }));
    });
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/^error: --out .*a-file\/sub: .*a-file is not a folder/);
    expect(r.stderr.trimEnd().split('\n')).toHaveLength(1); // no progress line: nothing was measured
  });
});
