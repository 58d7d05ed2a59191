/**
 * The qk properties (SPEC §8, fewer queries than keys): the reference backend passes them; with caps.qkLayout
 * false they skip visibly while the layout validation (E_RANGE, E_SHAPE, E_UNSUPPORTED naming cuSeqlensQ) still
 * runs and passes; a backend that misplaces the queries (top-left aligned, or all at the last key) or refuses the
 * layout before validating it fails them. The generator reaches nq = 0, 1, a few and nk.
 */
import fc from 'fast-check';
import type { Backend } from '@moba/core';
import { describe, expect, it } from 'vitest';
import { type Report, createReferenceBackend, qkSpecArb, runConformance } from '../src/index.js';
import { allAtLast, misaligned, topLeft, unsupportedFirst } from './faulty-qk.js';

const ROUTE = 'qk: route() with fewer queries';
const ATTN = 'qk: forward (out, lse) and backward';
const EQUAL = 'qk: a QK layout whose query and key boundaries are equal';
const VALID = 'qk: the QK layout is validated first';

async function run(b: Backend, only = ['qk: ']): Promise<Report> {
  try {
    return await runConformance(b, { only, numRuns: 8 });
  } finally {
    await b.destroy();
  }
}
function result(r: Report, name: string): { ok: boolean; skipped: boolean; message: string } {
  const x = r.results.find((y) => `${y.group}: ${y.name}`.startsWith(name));
  if (!x) throw new Error(`${name} did not run; ran ${r.results.map((y) => y.name).join(', ')}`);
  return { ok: x.ok, skipped: x.skipped ?? false, message: x.message ?? '' };
}

describe('qk properties', () => {
  it('the reference backend passes all of them', async () => {
    const r = await run(createReferenceBackend());
    expect(r.results.map((x) => [x.name.slice(0, 30), x.ok, x.skipped ?? false, x.message ?? ''])).toEqual(r.results.map((x) => [x.name.slice(0, 30), true, false, '']));
    expect(r.results).toHaveLength(4);
  });

  it('without caps.qkLayout: a visible capability skip, the validation checks pass', async () => {
    const r = await run(createReferenceBackend({ caps: { qkLayout: false } }));
    for (const n of [ROUTE, ATTN]) {
      expect(result(r, n)).toEqual({ ok: true, skipped: true, message: 'fewer queries than keys: caps.qkLayout is false' });
    }
    for (const n of [EQUAL, VALID]) expect(result(r, n)).toEqual({ ok: true, skipped: false, message: '' });
    expect(r.notCovered).toContain('fewer queries than keys (caps.qkLayout is false)');
  });

  it('fails a backend that aligns the queries top-left', async () => {
    const r = await run(misaligned(createReferenceBackend(), topLeft));
    expect(result(r, ROUTE).ok).toBe(false);
    expect(result(r, ROUTE).message).toMatch(/seqlensQ=\[/);
    expect(result(r, ATTN).ok).toBe(false);
    expect(result(r, EQUAL).ok).toBe(true); // equal boundaries: top-left is bottom-right
    expect(result(r, VALID).ok).toBe(true);
  });

  it('fails a backend whose router is right but whose forward aligns top-left (the attention check, not the routing one)', async () => {
    const r = await run(misaligned(createReferenceBackend(), topLeft, true), [ATTN]);
    expect(result(r, ATTN).ok).toBe(false);
    expect(result(r, ATTN).message).not.toMatch(/routing row/);
    expect(result(r, ATTN).message).toMatch(/QK layout: (out|lse)[^\n]*NOT within/);
  });

  it('fails a backend that puts every query at the last key', async () => {
    const r = await run(misaligned(createReferenceBackend(), allAtLast));
    expect(result(r, ROUTE).ok).toBe(false);
    expect(result(r, ATTN).ok).toBe(false);
  });

  it('fails a backend that refuses a QK layout before validating it', async () => {
    const r = await run(unsupportedFirst(createReferenceBackend({ caps: { qkLayout: false } })), [VALID]);
    expect(result(r, VALID).ok).toBe(false);
    expect(result(r, VALID).message).toMatch(/nq > nk: threw E_UNSUPPORTED .* expected E_RANGE/);
  });

  it('draws nq = 0, 1, a few and nk, several sequences, at least one query', () => {
    const seen = new Set<string>();
    const caps = createReferenceBackend().caps;
    for (const s of fc.sample(qkSpecArb(caps, { maxSeqs: 4, maxTokens: 48 }), { numRuns: 300, seed: 1 })) {
      expect(s.seqlensQ.length).toBe(s.seqlens.length);
      expect(s.seqlensQ.reduce((a, b) => a + b, 0)).toBeGreaterThan(0);
      s.seqlensQ.forEach((nq, i) => {
        const nk = s.seqlens[i]!;
        expect(nq).toBeLessThanOrEqual(nk);
        seen.add(nq === 0 ? 'zero' : nq === nk ? 'all' : nq === 1 ? 'one' : 'few');
      });
      if (s.seqlens.length > 1) seen.add('several');
      if (s.Hq > s.Hkv) seen.add('gqa');
      if (!s.causal) seen.add('noncausal');
    }
    expect([...seen].sort()).toEqual(['all', 'few', 'gqa', 'noncausal', 'one', 'several', 'zero']);
  });
});
