/**
 * The suite must be able to fail: each injected fault (faulty-backends.ts) makes exactly the
 * properties that cover it fail, through the public runConformance, while the unaffected ones pass.
 */
import type { Backend } from '@moba/core';
import { beforeAll, describe, expect, it } from 'vitest';
import { type Report, runConformance } from '../src/index.js';
import { baseFactory, blockTable64, dqSixSlots, dropCausalMask, dropScale, gqa4DvShort, gqaDkSign, lenientTopk, racyRouter } from './faulty-backends.js';

const P = {
  routingValid: 'routing: route() is valid',
  routingRoundTrip: 'routing: routingFromIndices',
  routingLarge: 'routing: large problem',
  forwardRandom: 'forward: out and lse match the reference under random',
  forwardOwn: "forward: out and lse match the reference under the backend's own",
  backwardRandom: 'backward: dq, dk, dv match the reference under random',
  dense: 'oracles: topk >= #blocks',
  local: 'oracles: topk = 1',
  kconv: 'kconv: ',
  hostileShapes: 'hostile: odd shapes',
  validation: 'validation: every SPEC',
  goldenC02: 'golden: c02',
  goldenC05: 'golden: c05',
  reachGroups: 'reach: every GQA group size',
  reachLong: 'reach: sequences of several hundred blocks',
};

let create: () => Backend;

beforeAll(async () => {
  ({ create } = await baseFactory());
});

/** Runs the named properties on `b` (destroyed afterwards) and returns the report. */
async function run(b: Backend, names: string[]): Promise<Report> {
  try {
    return await runConformance(b, { only: names, numRuns: 8 });
  } finally {
    await b.destroy();
  }
}

function outcome(r: Report, name: string): { ok: boolean; message: string } {
  const res = r.results.find((x) => `${x.group}: ${x.name}`.startsWith(name));
  if (!res) throw new Error(`property ${name} did not run; ran ${r.results.map((x) => x.name).join(', ')}`);
  expect(res.skipped ?? false).toBe(false);
  return { ok: res.ok, message: res.message ?? '' };
}

function expectOutcomes(r: Report, fail: string[], pass: string[]): void {
  for (const n of fail) expect(outcome(r, n).ok, `${n} should fail`).toBe(false);
  for (const n of pass) expect(outcome(r, n).ok, `${n} should pass: ${outcome(r, n).message}`).toBe(true);
  expect(r.failed).toBe(fail.length);
}

describe('injected faults are caught', () => {
  it('the unmodified base backend passes the whole suite', async () => {
    const r = await runConformance(create(), { factory: create });
    const bad = r.results.filter((x) => !x.ok).map((x) => `${x.group}: ${x.name}\n${x.message}`);
    expect(bad).toEqual([]);
    expect(r.passed).toBeGreaterThanOrEqual(25);
  });

  it('(a) a forward without the causal mask fails forward, oracles, hostile shapes and golden cases', async () => {
    const fail = [P.forwardRandom, P.forwardOwn, P.dense, P.local, P.hostileShapes, P.goldenC02];
    const pass = [P.routingValid, P.kconv, P.validation];
    const r = await run(dropCausalMask(create()), [...fail, ...pass]);
    expectOutcomes(r, fail, pass);
    const m = outcome(r, P.forwardRandom).message;
    expect(m).toMatch(/config: T=\d+ seqlens=\[[\d,]+\] Hq=\d+ Hkv=\d+ D=\d+ dtype=\w+ blockSize=\d+ topk=\d+ causal=\w+/);
    expect(m).toMatch(/out: max abs error .* at \[\d+, \d+, \d+\] .* NOT within/);
    expect(m).toContain(`MOBA_SEED=${r.seed}`);
    expect(m).toMatch(/seed: \d+, path: "\d+(:\d+)*"/); // fast-check's replay line
  });

  it('(a) a forward without the softmax scale fails forward and backward', async () => {
    const fail = [P.forwardRandom, P.forwardOwn, P.backwardRandom];
    const pass = [P.routingValid, P.kconv];
    expectOutcomes(await run(dropScale(create()), [...fail, ...pass]), fail, pass);
  });

  it('(b) a router that mis-routes ~1% of rows at random fails the large routing check', async () => {
    const fail = [P.routingLarge];
    const pass = [P.forwardRandom, P.backwardRandom, P.routingRoundTrip, P.kconv, P.validation];
    const r = await run(racyRouter(create()), [...fail, ...pass]);
    expectOutcomes(r, fail, pass);
    const m = outcome(r, P.routingLarge).message;
    expect(m).toMatch(/below the k-th best/);
    expect(m).toMatch(/two identical route\(\) calls differ in \d+ of 8192 rows/);
  });

  it('(c) a backward with the wrong dk sign under GQA fails backward, hostile GQA/MQA and the MQA golden case', async () => {
    const fail = [P.backwardRandom, P.hostileShapes, P.goldenC05];
    const pass = [P.forwardRandom, P.forwardOwn, P.routingValid, P.kconv, P.dense, P.goldenC02];
    const r = await run(gqaDkSign(create()), [...fail, ...pass]);
    expectOutcomes(r, fail, pass);
    expect(outcome(r, P.backwardRandom).message).toMatch(/dk: max abs error .* NOT within/);
    expect(outcome(r, P.hostileShapes).message).toMatch(/GQA 6\/2.*\n(.*\n)*.*dk: .*NOT within/);
  });

  it('(d) a backend that does not validate topk fails the validation property', async () => {
    const fail = [P.validation];
    const pass = [P.routingValid, P.forwardRandom, P.backwardRandom, P.goldenC02];
    const r = await run(lenientTopk(create()), [...fail, ...pass]);
    expectOutcomes(r, fail, pass);
    const m = outcome(r, P.validation).message;
    for (const topk of ['0', '1.5', 'NaN', '-1']) expect(m).toContain(`route() with topk = ${topk}: did not throw, expected a MobaError E_RANGE`);
    expect(m).toMatch(/^ {2}8 of \d+ bad inputs were not rejected correctly:$/m);
  });

  /** The whole catalogue on a faulty backend: it must fail, and every failure must be that fault's tensor. */
  async function caughtByTheSuite(b: Backend, tensor: RegExp): Promise<string[]> {
    const r = await run(b, []);
    const failed = r.results.filter((x) => !x.ok);
    expect(failed.map((x) => `${x.group}: ${x.name}`), 'the suite must fail on this fault').not.toEqual([]);
    for (const x of failed) expect(x.message, `${x.group}: ${x.name}`).toMatch(tensor);
    return failed.map((x) => `${x.group}: ${x.name}`);
  }

  it('(e) dv wrong only for GQA groups of 4 with Hkv >= 2 is caught', async () => {
    const failed = await caughtByTheSuite(gqa4DvShort(create()), /dv: max abs error .* NOT within/);
    expect(failed).toEqual(expect.arrayContaining([expect.stringContaining(P.reachGroups)]));
  });

  it('(f) a forward that drops blocks past the 64th of a sequence is caught', async () => {
    const failed = await caughtByTheSuite(blockTable64(create()), /(out|lse): max abs error .* NOT within/);
    expect(failed).toEqual(expect.arrayContaining([expect.stringContaining(P.reachLong)]));
  });

  it('(g) dq that ignores the 7th and later selected blocks (topk >= 7 only) is caught', async () => {
    const failed = await caughtByTheSuite(dqSixSlots(create()), /dq: max abs error .* NOT within/);
    expect(failed).toEqual(expect.arrayContaining([expect.stringContaining(P.reachGroups)]));
  });

  it('a failure replays with the same seed, and differs under another seed', async () => {
    const only = [P.forwardRandom];
    const msg = async (seed: number): Promise<string> => {
      const b = dropScale(create());
      try {
        return (await runConformance(b, { only, seed, numRuns: 8 })).results[0]!.message ?? '';
      } finally {
        await b.destroy();
      }
    };
    const first = await msg(1234);
    expect(first).toContain('MOBA_SEED=1234');
    expect(await msg(1234)).toBe(first);
    expect(await msg(4321)).not.toBe(first);
  });
});
