/**
 * 16-bit storage (storage.wgsl.ts): f16 and bf16 device tensors take 2 bytes per element (two per u32 word),
 * uploads and downloads copy the bits as they are (every one of the 65536 patterns, NaN payloads and
 * subnormals included), and the outputs of forward, backward and kconv are stored in their dtype too.
 */
import { type DType, fromFloat, hostTensor, uniformSeqlens } from '@moba/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type WebGpuBackend, createWebGpuBackend } from '../src/index.js';
import { unavailableBecause } from './gate.js';

const words = (n: number): number => Math.max(16, 4 * Math.ceil(n / 2)); // buffers are at least 16 bytes

describe('webgpu 16-bit storage', () => {
  let b: WebGpuBackend | null = null;
  let unavailable: string | null = null;
  beforeAll(async () => {
    try {
      b = await createWebGpuBackend();
    } catch (e) {
      unavailable = unavailableBecause(e);
    }
  });
  afterAll(async () => {
    await b?.destroy();
  });

  for (const dtype of ['f16', 'bf16'] as DType[]) {
    it(`${dtype}: all 65536 bit patterns (and an odd length) round-trip unchanged in 2 bytes per element`, async (t) => {
      if (!b) return t.skip(unavailable ?? 'no backend');
      const all = Uint16Array.from({ length: 65536 }, (_, i) => i);
      const d = await b.upload(hostTensor(dtype, [65536], all));
      expect(b.tensorBytes(d)).toBe(2 * 65536);
      expect((await b.download(d)).data).toEqual(all);
      const odd = await b.upload(hostTensor(dtype, [3, 1, 7], all.slice(30000, 30021)));
      expect(b.tensorBytes(odd)).toBe(words(21));
      expect((await b.download(odd)).data).toEqual(all.slice(30000, 30021));
      b.dispose(d, odd);
    });

    it(`${dtype}: out, dq, dk, dv and kconv outputs are stored in 16 bits; lse in f32`, async (t) => {
      if (!b) return t.skip(unavailable ?? 'no backend');
      const [T, Hq, Hkv, D, W] = [24, 2, 1, 5, 3];
      const layout = { cuSeqlens: uniformSeqlens(2, T / 2) };
      const cfg = { blockSize: 4, topk: 2 };
      const x = (n: number, f: number) => fromFloat(Array.from({ length: n }, (_, i) => Math.sin(f * i)), dtype, [n]).data;
      const q = await b.upload(hostTensor(dtype, [T, Hq, D], x(T * Hq * D, 0.3)));
      const k0 = await b.upload(hostTensor(dtype, [T, Hkv, D], x(T * Hkv * D, 0.7)));
      const w = await b.upload(hostTensor(dtype, [Hkv * D, W], x(Hkv * D * W, 0.2)));
      const k = await b.kconv(k0, w, layout);
      const r = await b.route(q, k, layout, cfg);
      const f = await b.forward(q, k, k, r, layout, cfg);
      const g = await b.backward(q, k, k, f.out, f.lse, q, r, layout, cfg);
      const kb = await b.kconvBackward(k0, w, g.dk, layout);
      for (const [name, d, n] of [['k', k, T * Hkv * D], ['out', f.out, T * Hq * D], ['dq', g.dq, T * Hq * D], ['dk', g.dk, T * Hkv * D],
        ['dv', g.dv, T * Hkv * D], ['kconv dk', kb.dk, T * Hkv * D], ['kconv dw', kb.dw, Hkv * D * W]] as const) {
        expect(d.dtype, name).toBe(dtype);
        expect(b.tensorBytes(d), name).toBe(words(n));
      }
      expect(b.tensorBytes(f.lse)).toBe(4 * T * Hq);
      b.dispose(q, k0, w, k, r, f.out, f.lse, g.dq, g.dk, g.dv, kb.dk, kb.dw);
    });
  }
});
