// Exhaustive checks of the f16/bf16 <-> f32 conversions over all 65,536 bit patterns: exact decode/encode
// round trips, and round-to-nearest-even at every midpoint between neighbouring representable values.
import { describe, expect, it } from 'vitest';
import { bf16ToF32, f16ToF32, f32ToBf16, f32ToF16, roundTo } from '../src/dtype.js';
import { castTensor, fromFloat } from '../src/tensor.js';

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

// JS numbers are f64: encoding rounds the f64 value once (rounding to f32 first could land on a midpoint).
describe('f64 -> f16 / bf16 rounds once (hand-computed bit patterns)', () => {
  const cases: [string, (x: number) => number, number, number][] = [
    // f16: ulp 2^-10 at 1; 1 = 0x3c00
    ['f16', f32ToF16, 1 + 2 ** -11 + 2 ** -40, 0x3c01], // above the midpoint by 2^-40: up (via f32: the midpoint, even 0x3c00)
    ['f16', f32ToF16, 1 + 2 ** -11, 0x3c00], // exact midpoint: even
    ['f16', f32ToF16, 1 + 3 * 2 ** -11, 0x3c02], // exact midpoint between 0x3c01 and 0x3c02: even
    ['f16', f32ToF16, 1 + 3 * 2 ** -11 - 2 ** -40, 0x3c01], // just below it: down (via f32: the midpoint, 0x3c02)
    ['f16', f32ToF16, -(1 + 2 ** -11 + 2 ** -40), 0xbc01],
    // f16 subnormals: unit 2^-24
    ['f16', f32ToF16, 2 ** -25, 0x0000], // half the smallest subnormal: even (0)
    ['f16', f32ToF16, 2 ** -25 + 2 ** -60, 0x0001], // via f32: 2^-25, then 0
    ['f16', f32ToF16, -(2 ** -25 + 2 ** -60), 0x8001],
    ['f16', f32ToF16, 3 * 2 ** -25, 0x0002], // 1.5 units: even (2)
    ['f16', f32ToF16, 1023.5 * 2 ** -24, 0x0400], // tie between the largest subnormal and the smallest normal: even
    ['f16', f32ToF16, 2 ** -14 - 2 ** -40, 0x0400],
    // f16 overflow: the largest finite is 65504 (0x7bff); 65520 is the midpoint to 2^16 (Inf)
    ['f16', f32ToF16, 65520 - 2 ** -30, 0x7bff], // via f32: 65520, then Inf
    ['f16', f32ToF16, 65520, 0x7c00],
    ['f16', f32ToF16, 1e300, 0x7c00],
    ['f16', f32ToF16, -Infinity, 0xfc00],
    ['f16', f32ToF16, -0, 0x8000],
    // bf16: ulp 2^-7 at 1; 1 = 0x3f80
    ['bf16', f32ToBf16, 1 + 2 ** -8 + 2 ** -40, 0x3f81], // via f32: the midpoint, even 0x3f80
    ['bf16', f32ToBf16, 1 + 2 ** -8, 0x3f80],
    ['bf16', f32ToBf16, 1 + 3 * 2 ** -8 - 2 ** -40, 0x3f81], // via f32: the midpoint, 0x3f82
    ['bf16', f32ToBf16, 2 ** -134 + 2 ** -170, 0x0001], // above half the smallest subnormal (2^-133); via f32: 0
    ['bf16', f32ToBf16, 2 ** -134, 0x0000],
    ['bf16', f32ToBf16, (2 - 2 ** -8) * 2 ** 127 - 2 ** 87, 0x7f7f], // below the overflow midpoint; via f32: Inf
    ['bf16', f32ToBf16, (2 - 2 ** -8) * 2 ** 127, 0x7f80],
    ['bf16', f32ToBf16, 1e300, 0x7f80],
    ['bf16', f32ToBf16, -1e-300, 0x8000],
  ];
  for (const [name, enc, x, bits] of cases) {
    it(`${name}(${x}) = 0x${bits.toString(16)}`, () => expect(enc(x).toString(16)).toBe(bits.toString(16)));
  }

  it('NaN stays a quiet NaN; fromFloat, castTensor and roundTo use the same single rounding', () => {
    const nan16 = f32ToF16(NaN);
    expect(nan16 & 0x7c00).toBe(0x7c00);
    expect(nan16 & 0x03ff).not.toBe(0);
    expect(Number.isNaN(bf16ToF32(f32ToBf16(NaN)))).toBe(true);
    const x = 1 + 2 ** -11 + 2 ** -40;
    expect(roundTo('f16', x)).toBe(1.0009765625);
    expect(roundTo('bf16', 1 + 2 ** -8 + 2 ** -40)).toBe(1.0078125);
    expect(fromFloat(Float64Array.of(x, -x), 'f16', [2]).data).toEqual(Uint16Array.of(0x3c01, 0xbc01));
    expect(fromFloat([x], 'bf16', [1]).data[0]).toBe(0x3f80); // 2^-11 is below bf16's half ulp
    expect(castTensor(fromFloat([1.0009765625], 'f32', [1]), 'f16').data[0]).toBe(0x3c01);
  });
});
