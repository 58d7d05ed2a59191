/**
 * Golden case c18 (decode: one query per sequence at its last key position, MQA, a sequence of one key; values from
 * an independent implementation, golden-format.md) on the CPU backend with `{ cuSeqlensQ, cuSeqlensK }`: routing
 * exactly the file's (its margin is far above rounding noise), out/lse/dq/dk/dv within the tolerance policy with the
 * file as the reference, calibrated by our f32 reference run. One thread and a worker pool.
 */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { fromFloat, resolveConfig, toFloat64 } from '@moba/core';
import { describe, expect, it } from 'vitest';
import { createCpuBackend } from '../src/index.js';
import { type Grads, type QkInputs, gradChecks, qkReference } from './qk-problem.js';

const casePath = resolve(dirname(fileURLToPath(import.meta.url)), '../../../../shared/golden/ext/c18_decode_1tok.json');

describe('cpu backend: golden c18_decode_1tok (seqlens_q)', () => {
  for (const threads of [1, 2]) {
    it(`matches the file with threads: ${threads}`, async (ctx) => {
      if (!existsSync(casePath)) {
        console.log(`skipped: ${casePath} is absent`);
        ctx.skip();
        return;
      }
      const g = JSON.parse(readFileSync(casePath, 'utf8'));
      expect(g.requires).toEqual(['seqlens_q']);
      const c = g.config;
      const layout = { cuSeqlensQ: Int32Array.from(c.cu_seqlens_q), cuSeqlensK: Int32Array.from(c.cu_seqlens) };
      const [Tq, Tk, Hq, Hkv, D, K] = [c.total_tokens_q, c.total_tokens, c.heads_q, c.heads_kv, c.head_dim, c.topk];
      const cfg = { blockSize: c.block_size, topk: K, causal: c.causal, scale: c.scale };
      const [q, k, v, dOut] = (['q', 'k', 'v', 'dout'] as const).map((n, i) => fromFloat(g.inputs[n] as number[], 'f32', [i % 3 === 0 ? Tq : Tk, i % 3 === 0 ? Hq : Hkv, D]));
      const p: QkInputs = {
        shape: { T: Tq, Tk, Hq, Hkv, D, dtype: 'f32' }, layout, rcfg: resolveConfig(cfg, D),
        q64: toFloat64(q!), k64: toFloat64(k!), v64: toFloat64(v!), dOut64: toFloat64(dOut!),
      };
      const b = createCpuBackend({ threads, minParallelWork: 0 });
      try {
        const [dq, dk, dv, dd] = await Promise.all([q!, k!, v!, dOut!].map((t) => b.upload(t)));
        const r = await b.route(dq!, dk!, layout, cfg);
        const idx = await b.routingIndices(r);
        const rows = Array.from({ length: Tq }, (_, a) => Array.from({ length: Hq }, (_, h) => Array.from(idx.subarray((a * Hq + h) * K, (a * Hq + h + 1) * K)).filter((j) => j >= 0)));
        expect(rows).toEqual(g.expected.routing);
        const f = await b.forward(dq!, dk!, dv!, r, layout, cfg);
        const gr = await b.backward(dq!, dk!, dv!, f.out, f.lse, dd!, r, layout, cfg);
        const [out, lse, gq, gk, gv] = await Promise.all([f.out, f.lse, gr.dq, gr.dk, gr.dv].map(async (t) => toFloat64(await b.download(t))));
        const got: Grads = { out: out!, lse: lse!, dq: gq!, dk: gk!, dv: gv! };
        // the file as the reference; our calibration's own rounding error moved onto it
        const ours = qkReference(p, idx);
        const keys = ['out', 'lse', 'dq', 'dk', 'dv'] as const;
        const ref = Object.fromEntries(keys.map((n) => [n, Float64Array.from(g.expected[n] as number[])])) as unknown as Grads;
        const cal = Object.fromEntries(keys.map((n) => [n, ref[n].map((x, i) => x + (ours.cal[n][i]! - ours.ref[n][i]!))])) as unknown as Grads;
        expect(gradChecks('c18', p, got, { ref, cal }).filter((x) => !x.ok).map((x) => x.message)).toEqual([]);
      } finally {
        await b.destroy();
      }
    });
  }
});
