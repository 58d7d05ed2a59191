// ndarray interop with the real scijs package: strided views are read in row-major order.
import ndarray from 'ndarray';
import { describe, expect, it } from 'vitest';
import { fromNdarray, toNdarray } from '../src/index.js';

describe('ndarray interop', () => {
  it('reads a transposed view row-major and wraps tensors back without copying', () => {
    const a = ndarray(new Float32Array([1, 2, 3, 4, 5, 6]), [2, 3]).transpose(1, 0); // [3, 2]
    const t = fromNdarray(a);
    expect(t.shape).toEqual([3, 2]);
    expect(Array.from(t.data)).toEqual([1, 4, 2, 5, 3, 6]);
    const back = toNdarray(t, ndarray);
    expect(back.get(2, 1)).toBe(6);
    expect(back.data).toBe(t.data);
  });
  it('needs an explicit 16-bit dtype for Uint16Array bits', () => {
    const a = ndarray(new Uint16Array([0x3c00]), [1]);
    expect(() => fromNdarray(a)).toThrow(/dtype f16 or bf16/);
    expect(fromNdarray(a, 'f16').dtype).toBe('f16');
  });
});
