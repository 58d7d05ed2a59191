// HostTensor<D>: the data type follows the dtype (checked by `pnpm typecheck`, which compiles this file), and
// Float16Array data for f16 where the runtime has one (Node 20 has none: there the detection path is tested).
import { describe, expect, expectTypeOf, it } from 'vitest';
import { type Backend, type DeviceTensor, type HostTensor, MobaError, castTensor, checkTensor, float16ArrayCtor, fromFloat, hostTensor, isFloat16Array } from '../src/index.js';

describe('HostTensor<D>', () => {
  it('hostTensor, fromFloat and castTensor infer the data type from the dtype; HostTensor alone stays the union', () => {
    const f = hostTensor('f32', [2]);
    const data: Float32Array = f.data; // a type error before HostTensor was generic
    expectTypeOf(f).toEqualTypeOf<HostTensor<'f32'>>();
    expectTypeOf(fromFloat([1, 2], 'bf16', [2]).data).toEqualTypeOf<Uint16Array>();
    expectTypeOf(castTensor(f, 'f16').data).toEqualTypeOf<Uint16Array>();
    const any: HostTensor = f; // assignable to the old, untyped form
    expectTypeOf(any.data).toEqualTypeOf<Float32Array | Uint16Array>();
    expect(data).toBeInstanceOf(Float32Array);
    expect(castTensor(f, 'f16').dtype).toBe('f16');
  });

  it('Backend.upload and download carry the dtype: downloading an f32 tensor gives a Float32Array', () => {
    const b = null as unknown as Backend; // types only: nothing is called
    const up = () => b.upload(hostTensor('f32', [2]));
    expectTypeOf<Awaited<ReturnType<typeof up>>>().toEqualTypeOf<DeviceTensor<'f32'>>();
    const down = (t: DeviceTensor<'f32'>) => b.download(t);
    expectTypeOf<Awaited<ReturnType<typeof down>>['data']>().toEqualTypeOf<Float32Array>();
    const down16 = (t: DeviceTensor<'bf16'>) => b.download(t);
    expectTypeOf<Awaited<ReturnType<typeof down16>>['data']>().toEqualTypeOf<Uint16Array>();
  });
});

describe('Float16Array for f16 data', () => {
  const F16 = (globalThis as { Float16Array?: new (a: number[]) => ArrayBufferView & { length: number } }).Float16Array;

  it('detection follows the runtime', () => {
    expect(float16ArrayCtor() !== undefined).toBe(typeof F16 === 'function');
    expect(isFloat16Array(new Uint16Array(2))).toBe(false);
    expect(isFloat16Array(new Float32Array(2))).toBe(false);
  });

  it('without Float16Array, f16 needs a Uint16Array and the message does not offer one', (t) => {
    if (F16 !== undefined) return t.skip('this runtime has Float16Array: the test above covers it');
    let e: unknown;
    try { hostTensor('f16', [2], new Float32Array(2)); } catch (x) { e = x; }
    expect(e).toBeInstanceOf(MobaError);
    expect((e as MobaError).message).toContain('must be a Uint16Array of raw f16 bits for dtype f16');
    expect((e as MobaError).message).not.toContain('Float16Array');
  });

  it('a real Float16Array is viewed as its bits (no copy); bf16 and f32 refuse it', (ctx) => {
    if (F16 === undefined) return ctx.skip('this runtime has no Float16Array (Node < 24): the detection path above is what runs');
    const a = new F16!([1, -2, 0.5]);
    const t = hostTensor('f16', [3], a as unknown as Uint16Array);
    expect(t.data).toBeInstanceOf(Uint16Array);
    expect(Array.from(t.data)).toEqual([0x3c00, 0xc000, 0x3800]);
    expect(t.data.buffer).toBe(a.buffer);
    expect(() => hostTensor('bf16', [3], a as unknown as Uint16Array)).toThrow(MobaError);
    expect(() => checkTensor('q', { dtype: 'f16', shape: [3], data: a as unknown as Uint16Array })).toThrow(/hostTensor/);
  });
});
