/**
 * The golden-case runner: the shipped cases parse as golden-format.md describes; a GQA and a
 * non-causal case pass; perturbed outputs or routing fail with the worst index; missing optional
 * fields are tolerated; malformed files fail with a message naming the field.
 */
import { mkdtempSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { PACKAGE_CASES_DIR, type Report, createReferenceBackend, loadGoldenCase, runConformance } from '../src/index.js';
import { makeCase } from './fixtures/make-case.js';

const dir = mkdtempSync(join(tmpdir(), 'moba-golden-'));
const backend = createReferenceBackend();
afterAll(() => backend.destroy());

/** Writes `cases` (name → object or raw text) to a fresh folder and runs only its golden cases. */
async function runCases(cases: Record<string, unknown>): Promise<Report> {
  const sub = mkdtempSync(join(dir, 'run-'));
  for (const [name, c] of Object.entries(cases)) writeFileSync(join(sub, `${name}.json`), typeof c === 'string' ? c : JSON.stringify(c));
  return runConformance(backend, { casesDir: sub, goldenOnly: true });
}

const gqa = makeCase('gqa_varlen', { seqlens: [29, 1, 18], Hq: 4, Hkv: 2, D: 12, blockSize: 4, topk: 3, causal: true, seed: 7 });
const nonCausal = makeCase('noncausal', { seqlens: [21, 10], Hq: 2, Hkv: 1, D: 8, blockSize: 4, topk: 2, causal: false, seed: 8 });

describe('golden cases', () => {
  it('parses every shipped case with its config', () => {
    const files = readdirSync(PACKAGE_CASES_DIR).filter((f) => f.endsWith('.json'));
    expect(files.length).toBeGreaterThanOrEqual(4);
    const c05 = loadGoldenCase(join(PACKAGE_CASES_DIR, 'c05_mqa_k1_d59.json'));
    expect([c05.T, c05.Hq, c05.Hkv, c05.D, c05.topk, c05.causal]).toEqual([91, 4, 1, 59, 1, true]);
    expect(c05.expected.routing?.length).toBe(91 * 4);
    expect(c05.q.length).toBe(91 * 4 * 59);
  });

  it('runs GQA and non-causal cases in every dtype and passes them', async () => {
    const r = await runCases({ gqa, nonCausal });
    expect(r.results.map((x) => [x.name, x.ok, x.message ?? ''])).toEqual([['gqa.json', true, ''], ['nonCausal.json', true, '']]);
  });

  it('fails a case whose expected out is off at one element, naming the index', async () => {
    const bad = structuredClone(gqa);
    const i = (30 * 4 + 3) * 12 + 5; // out[30, 3, 5] of [T, Hq = 4, D = 12]
    bad.expected.out[i] += 0.05;
    const r = await runCases({ bad });
    expect(r.failed).toBe(1);
    expect(r.results[0]!.message).toMatch(/out: max abs error 5\.0\d*e-2 at \[30, 3, 5\].*NOT within/);
  });

  it('fails a routing that differs from the file on a row with a clear margin', async () => {
    const bad = structuredClone(gqa);
    const row = bad.expected.routing[20][1] as number[]; // t = 20, block 5 of sequence 0: past blocks 0..4
    const margin = bad.expected.routing_margin[20][1] as number;
    expect(margin).toBeGreaterThan(1e-3);
    const swapped = [0, 1, 2, 3, 4].find((j) => !row.includes(j))!;
    row[0] = swapped;
    row.sort((a, b) => a - b);
    const r = await runCases({ bad });
    expect(r.failed).toBe(1);
    expect(r.results[0]!.message).toMatch(/routing row \(t=20, h=1\) = \[.*\], file has \[.*\]: margin .* is above the rounding noise/);
  });

  it('tolerates missing optional fields (routing, margins, gradients, dout, scale, causal, cu_seqlens)', async () => {
    const slim = structuredClone(gqa);
    delete slim.expected.routing;
    delete slim.expected.routing_margin;
    delete slim.expected.dq;
    delete slim.expected.dk;
    delete slim.expected.dv;
    delete slim.inputs.dout;
    delete slim.config.causal;
    delete slim.config.cu_seqlens;
    delete slim.config.scale; // the default 1/sqrt(D) is what the case was made with
    const r = await runCases({ slim });
    expect(r.results[0]!.message ?? '').toBe('');
    expect(r.passed).toBe(1);
  });

  it('fails malformed files with a message naming the file and the field', async () => {
    const noQ = structuredClone(nonCausal);
    delete noQ.inputs.q;
    const shortK = structuredClone(nonCausal);
    shortK.inputs.k.pop();
    const badRouting = structuredClone(nonCausal);
    badRouting.expected.routing[3] = [[0]];
    const r = await runCases({ noQ, shortK, badRouting, notJson: '{ "config": ' });
    expect(r.failed).toBe(4);
    const msg = Object.fromEntries(r.results.map((x) => [x.name, x.message ?? '']));
    expect(msg['noQ.json']).toMatch(/noQ\.json is malformed: inputs\.q is missing/);
    expect(msg['shortK.json']).toMatch(/inputs\.k has 247 values, expected 248/);
    expect(msg['badRouting.json']).toMatch(/expected\.routing\[3\] must hold 2 lists/);
    expect(msg['notJson.json']).toMatch(/not valid JSON/);
  });
});
