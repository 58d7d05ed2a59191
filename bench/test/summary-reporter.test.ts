/**
 * scripts/summary-reporter.ts (the vitest reporter of `pnpm test`): each distinct skip reason once, with the
 * suites it skipped and how to get the missing device, then the closing `N passed, M failed` line CI reads.
 */
import { describe, expect, it } from 'vitest';
import { type ModuleLike, type TestLike, summaryLines } from '../../scripts/summary-reporter.js';

const mod = { type: 'module' };
const suite = (name: string, parent: TestLike['parent'] = mod): TestLike['parent'] => ({ type: 'suite', name, parent });
const test = (parent: TestLike['parent'], state: string, note?: string): TestLike => ({ name: 't', parent, result: () => ({ state, note }) });
const file = (id: string, tests: TestLike[], state = 'passed'): ModuleLike => ({ moduleId: `/r/${id}`, relativeModuleId: id, children: { allTests: () => tests }, state: () => state });

describe('summary reporter', () => {
  it('prints each skip reason once with its suites and a setup hint, then the summary line last', () => {
    const noAdapter = 'webgpu unavailable: [E_DEVICE] WebGPU is available but requestAdapter() returned no adapter';
    const lines = summaryLines([
      file('packages/backend-webgpu/test/conformance.test.ts', [test(suite('webgpu'), 'skipped', noAdapter), test(suite('webgpu'), 'skipped', noAdapter)]),
      file('packages/backend-webgpu/test/sync.test.ts', [test(suite('nested', suite('webgpu sync')), 'skipped', noAdapter), test(mod, 'passed')]),
      file('packages/backend-cpu/test/browser.test.ts', [test(suite('cpu in chromium'), 'skipped', 'chromium is missing (install it with bash scripts/setup-chromium.sh)')]),
      file('bench/test/x.test.ts', [test(mod, 'skipped'), test(mod, 'failed')]),
      file('broken.test.ts', [], 'failed'),
    ], 1);
    expect(lines).toEqual([
      `skipped: 3 tests (webgpu, webgpu sync) — ${noAdapter} (run scripts/setup-webgpu.sh)`,
      'skipped: 1 test (cpu in chromium) — chromium is missing (install it with bash scripts/setup-chromium.sh)',
      'skipped: 1 test (bench/test/x.test.ts) — no reason given (bench/test/x.test.ts)',
      '1 passed, 3 failed, 5 skipped',
    ]);
  });

  it('ends with the plain summary line and no skip lines when nothing skipped', () => {
    expect(summaryLines([file('a.test.ts', [test(mod, 'passed'), test(mod, 'passed')])], 0)).toEqual(['2 passed, 0 failed']);
  });
});
