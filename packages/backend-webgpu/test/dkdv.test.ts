/**
 * The dK/dV kernel (backward-dkdv.wgsl.ts) against the first one (backward-dkdv-v1.wgsl.ts, `tuning.dkdv =
 * 'v1'`): both sum every value in the same order, so dq, dk and dv must agree bit for bit, including NaN
 * poisoning, on ragged GQA problems, with the default and the 16 KiB tile sets and with partials in passes.
 * (The float64 reference is checked by the conformance suites; this pins the rewrite to the kernel it replaces.)
 */
import { type Backend, type HostTensor, MobaError, Rng, hostTensor } from '@moba/core';
import { isRequired } from '@moba/testkit/vitest';
import { beforeAll, describe, expect, it } from 'vitest';
import { type WebGpuTuning, createWebGpuBackend } from '../src/index.js';

interface Problem { lens: number[]; Hq: number; Hkv: number; D: number; blockSize: number; topk: number; causal: boolean; nan?: boolean }

const PROBLEMS: Problem[] = [
  { lens: [300, 211], Hq: 4, Hkv: 2, D: 80, blockSize: 64, topk: 3, causal: true, nan: true },
  { lens: [257], Hq: 2, Hkv: 1, D: 128, blockSize: 128, topk: 2, causal: true },
  { lens: [190, 77], Hq: 3, Hkv: 3, D: 24, blockSize: 96, topk: 2, causal: false },
  { lens: [160], Hq: 2, Hkv: 2, D: 256, blockSize: 160, topk: 1, causal: true },
];

async function gradients(b: Backend, p: Problem): Promise<HostTensor[]> {
  const T = p.lens.reduce((a, x) => a + x, 0);
  const rng = new Rng(T * 31 + p.D);
  const tensor = (H: number, poison: boolean): HostTensor => {
    const x = Float32Array.from({ length: T * H * p.D }, () => rng.normal());
    if (poison) x[(17 * H + 1) * p.D + 5] = Number.NaN; // row 17, head 1
    return hostTensor('f32', [T, H, p.D], x);
  };
  const [q, k, v, dOut] = await Promise.all([tensor(p.Hq, !!p.nan), tensor(p.Hkv, false), tensor(p.Hkv, false), tensor(p.Hq, false)].map((t) => b.upload(t)));
  const cuSeqlens = Int32Array.from([0, ...p.lens.map((_, i) => p.lens.slice(0, i + 1).reduce((a, x) => a + x, 0))]);
  const layout = { cuSeqlens };
  const cfg = { blockSize: p.blockSize, topk: p.topk, causal: p.causal };
  const r = await b.route(q!, k!, layout, cfg);
  const f = await b.forward(q!, k!, v!, r, layout, cfg);
  const g = await b.backward(q!, k!, v!, f.out, f.lse, dOut!, r, layout, cfg);
  const out = [await b.download(g.dq), await b.download(g.dk), await b.download(g.dv)];
  b.dispose(q!, k!, v!, dOut!, r, f.out, f.lse, g.dq, g.dk, g.dv);
  return out;
}

const bits = (t: HostTensor): Uint32Array => new Uint32Array((t.data as Float32Array).slice().buffer);

describe('webgpu dK/dV kernel v2 = v1, bit for bit', () => {
  let unavailable: string | null = null;
  beforeAll(async () => {
    try {
      await (await createWebGpuBackend()).destroy();
    } catch (e) {
      if (!(e instanceof MobaError && e.code === 'E_DEVICE')) throw e;
      unavailable = e.message;
      if (isRequired('webgpu')) throw new Error(`webgpu is required (MOBA_REQUIRE) but unavailable: ${e.message}`);
    }
  });

  const budgets: [string, WebGpuTuning][] = [['device tiles', {}], ['16 KiB tiles, partials in passes', { workgroupStorage: 16384, partialBytes: 256 * 1024 }]];
  for (const [name, tuning] of budgets) {
    it(name, async (t) => {
      if (unavailable) return t.skip(unavailable);
      const v1 = await createWebGpuBackend({ tuning: { ...tuning, dkdv: 'v1' } });
      const v2 = await createWebGpuBackend({ tuning });
      try {
        for (const p of PROBLEMS) {
          const [a, b] = [await gradients(v1, p), await gradients(v2, p)];
          for (const [i, which] of ['dq', 'dk', 'dv'].entries()) {
            const x = bits(a[i]!);
            const y = bits(b[i]!);
            const diff = x.findIndex((w, j) => w !== y[j]);
            expect(diff, `${which} of ${JSON.stringify(p)} differs at ${diff}: ${a[i]!.data[diff]} vs ${b[i]!.data[diff]}`).toBe(-1);
            if (p.nan) expect(x.some((w) => (w & 0x7fffffff) > 0x7f800000), `${which} has a NaN`).toBe(true);
          }
        }
      } finally {
        await v1.destroy();
        await v2.destroy();
      }
    }, 600_000);
  }
});
