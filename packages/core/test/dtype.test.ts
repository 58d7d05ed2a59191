// Exhaustive checks of the f16/bf16 <-> f32 conversions over all 65,536 bit patterns: exact decode/encode
// round trips, and round-to-nearest-even at every midpoint between neighbouring representable values.
import { describe, expect, it } from 'vitest';
import { bf16ToF32, f16ToF32, f32ToBf16, f32ToF16, roundTo } from '../src/dtype.js';

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);
/** The next f32 above/below x (x finite, nonzero magnitude handling via bits). */
function nextF32(x: number, dir: 1 | -1): number {
  f32[0] = x;
  if (x === 0) { u32[0] = 1; return dir * f32[0]!; }
  u32[0] = u32[0]! + ((x > 0) === (dir > 0) ? 1 : -1);
  return f32[0]!;
}

for (const [name, dec, enc] of [
  ['f16', f16ToF32, f32ToF16],
  ['bf16', bf16ToF32, f32ToBf16],
] as const) {
  describe(`${name} conversion`, () => {
    it('decodes then encodes every bit pattern to itself (NaN stays NaN)', () => {
      let bad = 0;
      for (let b = 0; b < 65536; b++) {
        const x = dec(b);
        const back = enc(x);
        if (Number.isNaN(x)) { if (!Number.isNaN(dec(back))) bad++; }
        else if (back !== b) bad++;
      }
      expect(bad).toBe(0);
    });

    it('rounds every midpoint to the even neighbour and near-midpoints to the nearer one', () => {
      let bad = 0;
      for (let b = 0; b < 0x7fff; b++) {
        const lo = dec(b);
        const hi = dec(b + 1);
        if (!Number.isFinite(lo) || !Number.isFinite(hi)) continue;
        const mid = (lo + hi) / 2; // exact in f32: one more mantissa bit than the 16-bit format
        expect(Math.fround(mid)).toBe(mid);
        const even = (b & 1) === 0 ? b : b + 1;
        for (const sign of [1, -1]) {
          const s = sign < 0 ? 0x8000 : 0;
          if (enc(sign * mid) !== (even | s)) bad++;
          if (enc(sign * nextF32(mid, -1)) !== (b | s)) bad++;
          if (enc(sign * nextF32(mid, 1)) !== ((b + 1) | s)) bad++;
        }
      }
      expect(bad).toBe(0);
    });

    it('overflows to infinity past the largest finite value and keeps signed zeros', () => {
      const maxFinite = name === 'f16' ? 65504 : bf16ToF32(0x7f7f);
      expect(dec(enc(maxFinite * 2))).toBe(Infinity);
      expect(dec(enc(-maxFinite * 2))).toBe(-Infinity);
      expect(Object.is(dec(enc(-0)), -0)).toBe(true);
      expect(Number.isNaN(dec(enc(NaN)))).toBe(true);
    });
  });
}

describe('roundTo', () => {
  it('is the identity on values already representable', () => {
    expect(roundTo('f16', 0.5)).toBe(0.5);
    expect(roundTo('bf16', 1.5)).toBe(1.5);
    expect(roundTo('f32', 0.1)).toBe(Math.fround(0.1));
  });
  it('f16 subnormals round correctly', () => {
    expect(f16ToF32(1)).toBe(2 ** -24);
    expect(f32ToF16(2 ** -25)).toBe(0); // exact half of the smallest subnormal: ties to even (0)
    expect(f32ToF16(2 ** -25 * 1.5)).toBe(1);
    expect(f32ToF16(2 ** -24 * 2.5)).toBe(2); // tie between 2 and 3 -> even
  });
});
