/**
 * The golden format's extensions (golden-format.md "Extensions"): the public ext cases (c13 noncausal, c15 kconv,
 * c18 seqlens_q) parse and pass on the reference backend; generated cases combining them (kconv with seqlens_q,
 * non-causal GQA decode) pass; a backend whose caps lack an extension skips the case naming the cap; an unknown
 * `requires` entry is a visible skip; malformed extension fields fail naming the field; a backend whose kconv
 * ignores the weight fails the kconv case, and one whose KV cache is wrong fails the seqlens_q case's cache part.
 */
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type AttendPlan, type Backend, type HostTensor, fromFloat, toFloat64, wrapBackend } from '@moba/core';
import { afterAll, describe, expect, it } from 'vitest';
import { type ReferenceCacheFactory, ReferenceCache, createReferenceBackend, loadGoldenCase, PACKAGE_CASES_DIR, type Report, runConformance } from '../src/index.js';
import { MalformedGoldenCaseError, UnsupportedGoldenCaseError, parseGoldenCase } from '../src/golden-parse.js';
import { makeExtCase } from './fixtures/make-ext-case.js';

const EXT = join(PACKAGE_CASES_DIR, 'ext');
const dir = mkdtempSync(join(tmpdir(), 'moba-golden-ext-'));
const backend = createReferenceBackend();
afterAll(() => backend.destroy());

async function runCases(b: Backend, cases: Record<string, unknown>): Promise<Report> {
  const sub = mkdtempSync(join(dir, 'run-'));
  for (const [name, c] of Object.entries(cases)) writeFileSync(join(sub, `${name}.json`), JSON.stringify(c));
  return runConformance(b, { casesDir: sub, goldenOnly: true });
}
const loadJson = (f: string): unknown => JSON.parse(readFileSync(f, 'utf8'));
const rows = (r: Report): [string, boolean, boolean, string][] => r.results.map((x) => [x.name, x.ok, x.skipped ?? false, (x.message ?? '').split('\n')[0]!]);

const decodeKconv = makeExtCase('decode_kconv', { seqlens: [37, 9, 1], seqlensQ: [1, 3, 1], Hq: 4, Hkv: 2, D: 8, blockSize: 4, topk: 3, causal: true, kconvWidth: 3, seed: 11 });
const chunkNoncausal = makeExtCase('chunk_noncausal', { seqlens: [30, 12], seqlensQ: [5, 0], Hq: 2, Hkv: 1, D: 6, blockSize: 5, topk: 2, causal: false, seed: 12 });
const tiny = makeExtCase('tiny', { seqlens: [6, 3], seqlensQ: [2, 1], Hq: 1, Hkv: 1, D: 2, blockSize: 2, topk: 2, causal: true, kconvWidth: 2, seed: 13 });
const variant = (edit: (c: Record<string, any>) => void): Record<string, any> => {
  const c = structuredClone(tiny);
  edit(c);
  return c;
};

describe('golden extensions', () => {
  it('parses the public ext cases: Tq query rows apart from Tk key rows, the kconv fields', () => {
    const c18 = loadGoldenCase(join(EXT, 'c18_decode_1tok.json'));
    expect([c18.requires, c18.T, c18.Tq, Array.from(c18.cuSeqlensQ), c18.seqlensQ]).toEqual([['seqlens_q'], 1034, 3, [0, 1, 2, 3], [1, 1, 1]]);
    expect([c18.q.length, c18.k.length, c18.expected.dq?.length, c18.expected.dk?.length, c18.expected.routing?.length]).toEqual([3 * 4 * 32, 1034 * 32, 3 * 4 * 32, 1034 * 32, 3 * 4 * 4]);
    const c15 = loadGoldenCase(join(EXT, 'c15_kconv3.json'));
    expect([c15.requires, c15.kconvWidth, c15.kconvWeight?.length, c15.expected.kConv?.length, c15.expected.dkconvWeight?.length]).toEqual([['kconv'], 3, 32 * 3, 277 * 32, 32 * 3]);
    const c13 = loadGoldenCase(join(EXT, 'c13_noncausal_k3.json'));
    expect([c13.requires, c13.causal, c13.kconvWidth, c13.Tq]).toEqual([['noncausal'], false, 0, 211]);
  });

  it('passes the public ext cases on the reference backend, c18 through the QK layout and the KV cache', async () => {
    const r = await runConformance(backend, { casesDir: EXT, goldenOnly: true });
    expect(rows(r)).toEqual(['c13_noncausal_k3.json', 'c15_kconv3.json', 'c18_decode_1tok.json'].map((n) => [n, true, false, '']));
    expect(r.notCovered.filter((n) => n.includes('KV cache'))).toEqual([]);
  });

  it('without caps.kvCache the cache part of a seqlens_q case is noted as not covered, the layout part still runs', async () => {
    const noCache = createReferenceBackend({ caps: { kvCache: false } });
    try {
      const r = await runConformance(noCache, { casesDir: join(EXT, 'c18_decode_1tok.json'), goldenOnly: true });
      expect(rows(r)).toEqual([['c18_decode_1tok.json', true, false, '']]);
      expect(r.notCovered).toContain('golden c18_decode_1tok through the KV cache (caps.kvCache is false: only the QK layout path ran)');
    } finally {
      await noCache.destroy();
    }
  });

  it('fails a backend whose cache attends without the scale, or appends without the kconv weight', async () => {
    class Unscaled extends ReferenceCache {
      protected override doAttend(plan: AttendPlan, q: HostTensor): Promise<{ out: HostTensor; lse: HostTensor }> {
        return super.doAttend({ ...plan, scale: plan.scale * 2 }, q);
      }
    }
    const faulty: [string, ReferenceCacheFactory, Record<string, unknown>][] = [
      ['unscaled', (h, o, w) => new Unscaled(h, o, w), { c18: loadJson(join(EXT, 'c18_decode_1tok.json')) }],
      ['no kconv', (h, o) => new ReferenceCache(h, { ...o, W: 0 }, null), { decodeKconv }],
    ];
    for (const [what, cache, cases] of faulty) {
      const b = createReferenceBackend({ cache });
      try {
        const r = await runCases(b, cases);
        expect(r.results[0]!.ok, what).toBe(false);
        expect(r.results[0]!.message, what).toMatch(/through the KV cache (out|lse): max abs error/);
        expect(r.results[0]!.message, what).not.toMatch(/QK layout|routing row/);
      } finally {
        await b.destroy();
      }
    }
  });

  it('passes generated cases combining the extensions (kconv with seqlens_q, non-causal chunks with nq = 0)', async () => {
    expect(decodeKconv.requires).toEqual(['kconv', 'seqlens_q']);
    const r = await runCases(backend, { decodeKconv, chunkNoncausal });
    expect(rows(r)).toEqual([['chunkNoncausal.json', true, false, ''], ['decodeKconv.json', true, false, '']]);
  });

  it('skips a case naming the cap a narrowed backend lacks', async () => {
    const narrow = createReferenceBackend({ caps: { nonCausal: false, kconv: false, qkLayout: false } });
    try {
      const r = await runConformance(narrow, { casesDir: EXT, goldenOnly: true });
      expect(rows(r)).toEqual([
        ['c13_noncausal_k3.json', true, true, 'requires noncausal, caps.nonCausal is false'],
        ['c15_kconv3.json', true, true, 'requires kconv, caps.kconv is false'],
        ['c18_decode_1tok.json', true, true, 'requires seqlens_q (fewer queries than keys), caps.qkLayout is false'],
      ]);
      expect(r.notCovered).toContain('golden c18_decode_1tok (requires seqlens_q (fewer queries than keys), caps.qkLayout is false)');
    } finally {
      await narrow.destroy();
    }
    const small = createReferenceBackend({ caps: { maxKconvWidth: 1 } });
    try {
      expect(rows(await runCases(small, { tiny }))).toEqual([['tiny.json', true, true, 'kconv width 2 > caps.maxKconvWidth 1']]);
    } finally {
      await small.destroy();
    }
  });

  it('skips a case with an unknown requires entry visibly, never running it', async () => {
    const c = variant((x) => x.requires.push('paged_kv'));
    expect(() => parseGoldenCase(c, 'x.json')).toThrow(UnsupportedGoldenCaseError);
    const r = await runCases(backend, { c });
    expect(rows(r)).toEqual([['c.json', true, true, expect.stringMatching(/requires "paged_kv", which this reader does not support/)]]);
    expect(r.notCovered.some((n) => n.includes('paged_kv'))).toBe(true);
  });

  it.each<[string, (c: Record<string, any>) => void, RegExp]>([
    ['requires not a list', (c) => (c.requires = 'kconv'), /requires = "kconv", expected a list of strings/],
    ['seqlens_q > seqlens', (c) => ((c.config.seqlens_q = [7, 1]), delete c.config.cu_seqlens_q, delete c.config.total_tokens_q), /sequence 0 has 7 queries but 6 keys/],
    ['seqlens_q without requires', (c) => (c.requires = ['kconv']), /config\.seqlens_q is given but requires lacks "seqlens_q"/],
    ['requires seqlens_q without seqlens_q', (c) => (delete c.config.seqlens_q, delete c.config.cu_seqlens_q, delete c.config.total_tokens_q), /neither "seqlens_q" nor "cu_seqlens_q"/],
    ['seqlens_q of another batch', (c) => ((c.config.seqlens_q = [2]), delete c.config.cu_seqlens_q, delete c.config.total_tokens_q), /describes 1 sequences but config\.seqlens has 2/],
    ['cu_seqlens_q disagreeing', (c) => (c.config.cu_seqlens_q = [0, 1, 3]), /config\.cu_seqlens_q \[0, 1, 3\] disagrees/],
    ['total_tokens_q wrong', (c) => (c.config.total_tokens_q = 9), /config\.total_tokens_q = 9 but the query counts sum to 3/],
    ['no query at all', (c) => ((c.config.seqlens_q = [0, 0]), delete c.config.cu_seqlens_q, delete c.config.total_tokens_q), /Tq = 0/],
    ['q with the key rows', (c) => (c.inputs.q = [...c.inputs.q, ...c.inputs.q, ...c.inputs.q]), /inputs\.q has 18 values, expected 6 = Tq \(3, config\.seqlens_q\)/],
    ['kconv weight of the wrong shape', (c) => c.inputs.kconv_weight.push(0.5), /inputs\.kconv_weight has 5 values, expected 4 = heads_kv·head_dim \(2\) × kconv_width \(2\)/],
    ['kconv weight missing', (c) => delete c.inputs.kconv_weight, /inputs\.kconv_weight is missing/],
    ['kconv_width without requires', (c) => (c.requires = ['seqlens_q']), /config\.kconv_width = 2 is given but requires lacks "kconv"/],
    ['requires kconv without a width', (c) => (c.config.kconv_width = null), /requires has "kconv" but config\.kconv_width is missing/],
    ['kconv_width 1e9', (c) => (c.config.kconv_width = 1e9), /config\.kconv_width = 1000000000, expected an integer in 1\.\.1024/],
    ['k_conv of the wrong length', (c) => c.expected.k_conv.pop(), /expected\.k_conv has 17 values, expected 18/],
    ['dkconv_weight of the wrong length', (c) => c.expected.dkconv_weight.pop(), /expected\.dkconv_weight has 3 values, expected 4/],
    ['requires noncausal but causal', (c) => c.requires.push('noncausal'), /requires has "noncausal" but config\.causal is not false/],
    ['routing with the key rows', (c) => (c.expected.routing = [...c.expected.routing, ...c.expected.routing, ...c.expected.routing]), /expected\.routing must be \[T = 3\]/],
  ])('refuses a malformed extension: %s', async (_what, edit, why) => {
    const c = variant(edit);
    expect(() => parseGoldenCase(c, 'x.json')).toThrow(MalformedGoldenCaseError);
    expect(() => parseGoldenCase(c, 'x.json')).toThrow(why);
    const r = await runCases(backend, { c });
    expect(rows(r)).toEqual([['c.json', false, false, expect.stringMatching(why)]]);
  });

  it('fails a backend whose kconv ignores the weight, and one whose kconvBackward drops the conv', async () => {
    const inner = createReferenceBackend();
    const noConv = wrapBackend(inner, { kconv: async (k) => inner.upload(fromFloat(toFloat64(await inner.download(k)), k.dtype, k.shape)) });
    const r = await runConformance(noConv, { casesDir: join(EXT, 'c15_kconv3.json'), goldenOnly: true });
    expect(rows(r)[0]!.slice(0, 2)).toEqual(['c15_kconv3.json', false]);
    expect(r.results[0]!.message).toMatch(/k_conv: max abs error/);
    const residualOnly = wrapBackend(inner, {
      kconvBackward: async (k, w, dkOut, l) => ({ ...(await inner.kconvBackward(k, w, dkOut, l)), dk: await inner.upload(await inner.download(dkOut)) }),
    });
    const r2 = await runCases(residualOnly, { decodeKconv });
    expect(r2.results[0]!.ok).toBe(false);
    expect(r2.results[0]!.message).toMatch(/ dk: max abs error/);
    await inner.destroy();
  });
});
