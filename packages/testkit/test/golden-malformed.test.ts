/**
 * Malformed golden files fail fast and clearly: every header size is checked (integer, range, products) against
 * the arrays the file actually holds before anything is allocated, so a 1 KB file claiming `heads_q: 1e9` or
 * `topk: 1e9` fails in milliseconds with one line naming the file and the field (a failure, never a skip);
 * `null` is refused outside `expected.lse` and `routing_margin`, while the NaN / Infinity encodings still parse.
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { createReferenceBackend, runConformance } from '../src/index.js';
import { MalformedGoldenCaseError, parseGoldenCase, parseGoldenJson } from '../src/golden-parse.js';
import { makeCase } from './fixtures/make-case.js';

const dir = mkdtempSync(join(tmpdir(), 'moba-malformed-'));
const backend = createReferenceBackend();
afterAll(() => backend.destroy());

/** A tiny valid case (T = 3, one head, D = 2, blocks of 1, topk 2), about 1 KB of JSON. */
const tiny = makeCase('tiny', { seqlens: [3], Hq: 1, Hkv: 1, D: 2, blockSize: 1, topk: 2, causal: true, seed: 3 });

/** `tiny` with `edit` applied to a deep copy. */
function variant(edit: (c: Record<string, any>) => void): Record<string, any> {
  const c = structuredClone(tiny);
  edit(c);
  return c;
}

/** Writes one file, runs it as the only golden case and returns its result. */
async function runOne(name: string, c: unknown): Promise<{ ok: boolean; skipped: boolean; first: string; ms: number }> {
  const sub = mkdtempSync(join(dir, 'run-'));
  const text = typeof c === 'string' ? c : JSON.stringify(c);
  expect(text.length).toBeLessThan(2000);
  writeFileSync(join(sub, `${name}.json`), text);
  const r = await runConformance(backend, { casesDir: sub, goldenOnly: true });
  expect(r.results).toHaveLength(1);
  const res = r.results[0]!;
  return { ok: res.ok, skipped: res.skipped ?? false, first: (res.message ?? '').split('\n')[0]!, ms: res.ms };
}

describe('malformed golden headers', () => {
  it('the tiny case itself passes', async () => {
    const r = await runOne('tiny', tiny);
    expect([r.ok, r.skipped, r.first]).toEqual([true, false, '']);
  });

  const headers: [string, (c: Record<string, any>) => void, RegExp][] = [
    ['heads_q 1e9', (c) => (c.config.heads_q = 1e9), /config\.heads_q = 1000000000/],
    ['topk 1e9', (c) => (c.config.topk = 1e9), /config\.topk = 1000000000/],
    ['head_dim 1e9', (c) => (c.config.head_dim = 1e9), /config\.head_dim = 1000000000/],
    ['seqlens [1e9]', (c) => ((c.config.seqlens = [1e9]), delete c.config.cu_seqlens, delete c.config.total_tokens), /config\.seqlens/],
    ['cu_seqlens [0, 1e9]', (c) => ((c.config.cu_seqlens = [0, 1e9]), delete c.config.seqlens, delete c.config.total_tokens), /config\.cu_seqlens/],
    ['heads_kv 2^26, heads_q 2^26 (a product past 2^53)', (c) => ((c.config.heads_q = 2 ** 26), (c.config.heads_kv = 2 ** 26)), /config\.heads_(q|kv) = 67108864/],
    ['head_dim 2^20 with heads_q 2^20', (c) => ((c.config.heads_q = 2 ** 20), (c.config.heads_kv = 1), (c.config.head_dim = 2 ** 20)), /config\.(heads_q|head_dim) = 1048576/],
    ['topk 65537', (c) => (c.config.topk = 65537), /config\.topk = 65537/],
    ['block_size 1.5', (c) => (c.config.block_size = 1.5), /config\.block_size = 1\.5/],
    ['topk -3', (c) => (c.config.topk = -3), /config\.topk = -3/],
    ['no sequences', (c) => ((c.config.seqlens = []), delete c.config.cu_seqlens, delete c.config.total_tokens), /config\.seqlens/],
  ];
  for (const [what, edit, field] of headers) {
    it(`${what}: one line naming the file and the field, a failure in milliseconds`, async () => {
      const r = await runOne('bad', variant(edit));
      expect(r.skipped, r.first).toBe(false);
      expect(r.ok, r.first).toBe(false);
      expect(r.first).toMatch(/^golden case .*bad\.json is malformed: /);
      expect(r.first).toMatch(field);
      expect(r.ms).toBeLessThan(1000);
    }, 10_000);
  }

  it('a bare Infinity token as a size fails naming the field', async () => {
    const text = JSON.stringify(tiny).replace('"topk":2', '"topk":Infinity');
    expect(text).toContain('"topk":Infinity');
    const r = await runOne('inf', text);
    expect([r.ok, r.skipped]).toEqual([false, false]);
    expect(r.first).toMatch(/inf\.json is malformed: config\.topk = "?Infinity"?/);
  });

  it('the error is typed: MalformedGoldenCaseError with the file and the field', () => {
    let err: unknown;
    try {
      parseGoldenCase(variant((c) => (c.config.heads_q = 1e9)), 'x.json');
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(MalformedGoldenCaseError);
    expect(err).toMatchObject({ name: 'MalformedGoldenCaseError', file: 'x.json', field: 'config.heads_q' });
    expect((err as Error).message).not.toContain('\n');
  });
});

describe('null in golden files', () => {
  const nulls: [string, (c: Record<string, any>) => void, RegExp][] = [
    ['inputs.q', (c) => (c.inputs.q[1] = null), /inputs\.q\[1\] is null/],
    ['inputs.k', (c) => (c.inputs.k[0] = null), /inputs\.k\[0\] is null/],
    ['inputs.v', (c) => (c.inputs.v[5] = null), /inputs\.v\[5\] is null/],
    ['inputs.dout', (c) => (c.inputs.dout[2] = null), /inputs\.dout\[2\] is null/],
    ['expected.out', (c) => (c.expected.out[3] = null), /expected\.out\[3\] is null/],
    ['expected.dq', (c) => (c.expected.dq[0] = null), /expected\.dq\[0\] is null/],
    ['config.scale (a string)', (c) => (c.config.scale = 'big'), /config\.scale holds "big"/],
  ];
  for (const [field, edit, why] of nulls) {
    it(`null (or a bad value) in ${field} is refused naming the field`, async () => {
      const r = await runOne('nul', variant(edit));
      expect([r.ok, r.skipped]).toEqual([false, false]);
      expect(r.first).toMatch(/nul\.json is malformed: /);
      expect(r.first).toMatch(why);
    });
  }

  it('null stays -Infinity in expected.lse and "nothing left out" in routing_margin; NaN / Infinity encodings parse', () => {
    const c = variant((x) => {
      x.expected.lse[0] = null;
      x.expected.routing_margin[0][0] = null;
    });
    const text = JSON.stringify(c).replace(/"q":\[[^,]+,[^,]+,/, '"q":[NaN,-Infinity,').replace(/"k":\[[^,]+,/, '"k":["Infinity",');
    const gc = parseGoldenCase(parseGoldenJson(text), 'ok.json');
    expect(gc.expected.lse![0]).toBe(-Infinity);
    expect(gc.expected.margins![0]).toBeNull();
    expect([gc.q[0], gc.q[1], gc.k[0]]).toEqual([NaN, -Infinity, Infinity]);
  });
});
