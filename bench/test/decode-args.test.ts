/** The decode bench's flags: the CPU and GPU configurations as defaults, --quick, and usage errors. */
import { describe, expect, it } from 'vitest';
import { UsageError } from '../args.js';
import { parseDecodeFlags } from '../decode-args.js';

const K = 1024;

describe('parseDecodeFlags', () => {
  it('CPU defaults: 4/4 heads, D 64, B 64, f32, 8K…128K, batch 1 and 8, a 4K prefill on 128K', () => {
    expect(parseDecodeFlags(['--', '--decode'], '/r')).toEqual({
      backend: 'cpu', contexts: [8 * K, 16 * K, 32 * K, 64 * K, 128 * K], batch: [1, 8], heads: [[4, 4]], D: 64, B: 64, topk: 8,
      dtype: 'f32', reps: 10, prefillChunk: 4 * K, prefillContext: 128 * K, seed: 1, dense: true, write: true, out: '/r', torch: true, torchBudgetS: 240,
    });
  });
  it('GPU defaults: 16/16 and 32/8, D 128, bf16, B 128, 8K…1M, batch 1, 16, 64', () => {
    const f = parseDecodeFlags(['--decode', '--backend', 'cuda'], '/r');
    expect(typeof f !== 'string' && [f.heads, f.D, f.B, f.dtype, f.contexts, f.batch]).toEqual([
      [[16, 16], [32, 8]], 128, 128, 'bf16', [8 * K, 32 * K, 128 * K, 512 * K, 1024 * K], [1, 16, 64],
    ]);
  });
  it('contexts take K and M suffixes (1M = 1024K), batch 64; the torch flags', () => {
    const f = parseDecodeFlags(['--decode', '--backend', 'webgpu', '--contexts', '8K,512K,1M', '--batch', '64', '--python', '/opt/py', '--torch-budget', '100'], '/r');
    expect(typeof f !== 'string' && [f.contexts, f.batch, f.python, f.torch, f.torchBudgetS]).toEqual([[8 * K, 512 * K, 1024 * K], [64], '/opt/py', true, 100]);
    const off = parseDecodeFlags(['--decode', '--no-torch'], '/r');
    expect(typeof off !== 'string' && [off.torch, off.dense, off.python]).toEqual([false, true, undefined]);
    const noDense = parseDecodeFlags(['--decode', '--no-dense'], '/r');
    expect(typeof noDense !== 'string' && noDense.torch).toBe(false);
    expect(() => parseDecodeFlags(['--decode', '--torch-budget', '5'], '/r')).toThrow(/--torch-budget/);
  });
  it('--quick shrinks what was not given; explicit flags win', () => {
    const f = parseDecodeFlags(['--decode', '--quick', '--batch', '3'], '/r');
    expect(typeof f !== 'string' && [f.contexts, f.batch, f.reps, f.prefillChunk, f.prefillContext]).toEqual([[8 * K, 16 * K], [3], 3, 512, 16 * K]);
  });
  it('--memory-gb becomes a byte budget; --no-dense, --no-write, --out', () => {
    const f = parseDecodeFlags(['--decode', '--memory-gb', '1.5', '--no-dense', '--no-write', '--out', 'x'], '/r', (p) => `/abs/${p}`);
    expect(typeof f !== 'string' && [f.memoryBytes, f.dense, f.write, f.out]).toEqual([1.5 * 2 ** 30, false, false, '/abs/x']);
  });
  it('bad values are usage errors naming the flag', () => {
    expect(() => parseDecodeFlags(['--decode', '--heads', '6/4'], '/r')).toThrow(UsageError);
    expect(() => parseDecodeFlags(['--decode', '--heads', '16'], '/r')).toThrow(/--heads 16/);
    expect(() => parseDecodeFlags(['--decode', '--contexts', '0'], '/r')).toThrow(/--contexts/);
    expect(() => parseDecodeFlags(['--decode', '--tokens', '8K'], '/r')).toThrow(/unknown flag --tokens/);
    expect(parseDecodeFlags(['--decode', '--help'], '/r')).toBe('help');
  });
});
