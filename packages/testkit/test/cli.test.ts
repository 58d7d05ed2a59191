/**
 * The moba-conformance CLI, run from sources as a child process: golden cases with a built-in backend
 * name and with a module path, the summary line and exit codes, --json, and bad usage.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { PACKAGE_CASES_DIR } from '../src/golden.js';
import { runConformance as runInBrowser } from '../src/browser.js';
import { createReferenceBackend } from '../src/reference-backend.js';
import { MAX_NUM_RUNS, resolveSettings } from '../src/run.js';
import { makeCase } from './fixtures/make-case.js';

const root = fileURLToPath(new URL('../../../', import.meta.url));
const cli = fileURLToPath(new URL('../src/cli.ts', import.meta.url));

function run(...args: string[]): { code: number | null; stdout: string; stderr: string; last: string } {
  const r = spawnSync(process.execPath, ['--conditions=@moba/source', '--import', 'tsx', cli, ...args], { cwd: root, encoding: 'utf8' });
  const lines = r.stdout.trimEnd().split('\n');
  return { code: r.status, stdout: r.stdout, stderr: r.stderr, last: lines[lines.length - 1]! };
}

describe('moba-conformance CLI', () => {
  it('--backend cpu --cases DIR runs one result per case file and ends with the summary line', () => {
    const r = run('--backend', 'cpu', '--cases', PACKAGE_CASES_DIR);
    expect(r.stderr).toBe('');
    expect(r.last).toBe('4 passed, 0 failed');
    expect(r.stdout.match(/^✓ golden: /gm)).toHaveLength(4);
    expect(r.code).toBe(0);
  });

  it('loads a backend module by path and exits 1 with a failing case', () => {
    const dir = mkdtempSync(join(tmpdir(), 'moba-cli-'));
    const good = makeCase('good', { seqlens: [13, 6], Hq: 2, Hkv: 1, D: 8, blockSize: 4, topk: 2, causal: true, seed: 3 });
    const bad = structuredClone(good);
    bad.expected.lse[7] += 0.5;
    writeFileSync(join(dir, 'good.json'), JSON.stringify(good));
    writeFileSync(join(dir, 'bad.json'), JSON.stringify(bad));
    const r = run('--backend', './packages/testkit/test/fixtures/reference-module.ts', '--cases', dir);
    expect(r.stdout).toMatch(/✗ golden: bad\.json[^\n]*\n\s+golden case good/);
    expect(r.stdout).toMatch(/lse: max abs error 5\.0\d*e-1 at \[3, 1\]/);
    expect(r.stdout).toContain('backend fixture');
    expect(r.last).toBe('1 passed, 1 failed');
    expect(r.code).toBe(1);
  });

  it('--json prints the Report on stdout and the summary on stderr', () => {
    const r = run('--backend', 'reference', '--cases', PACKAGE_CASES_DIR, '--seed', '5', '--json');
    const report = JSON.parse(r.stdout) as { backend: string; seed: number; passed: number; failed: number; results: unknown[] };
    expect([report.backend, report.seed, report.passed, report.failed, report.results.length]).toEqual(['reference', 5, 4, 0, 4]);
    expect(r.stderr.trim()).toBe('4 passed, 0 failed');
  });

  it('rejects bad usage with exit code 2 and one line on stderr', () => {
    const cases: [string[], RegExp][] = [
      [['--cases', PACKAGE_CASES_DIR], /--backend is required/],
      [['--backend', 'cpu', '--seed', 'x'], /--seed x is invalid/],
      [['--backend', 'cpu', '--cases', './nonexistent'], /--cases \.\/nonexistent: no such file or folder/],
      [['--backend', 'cpu', '--num-runs', '99999999999999999999'], new RegExp(`--num-runs 99999999999999999999 is invalid: must be an integer in \\[1, ${MAX_NUM_RUNS}\\]`)],
      [['--backend', 'cpu', '--num-runs', '-5'], /--num-runs -5 is invalid/],
      [['--backend', 'cpu', '--num-runs', '0'], /--num-runs 0 is invalid/],
      [['--backend', 'cpu', '--only', 'no such property'], /nothing to run: no property matches --only 'no such property'/],
      [['--backend', 'cpu', '--bakend', 'cpu'], /unknown flag --bakend \(did you mean --backend\?\)/],
    ];
    for (const [argv, msg] of cases) {
      const r = run(...argv);
      expect(r.code, argv.join(' ')).toBe(2);
      expect(r.stderr, argv.join(' ')).toMatch(msg);
      expect(r.stderr.trimEnd().split('\n'), argv.join(' ')).toHaveLength(1);
      expect(r.stderr).not.toMatch(/\n\s+at /);
    }
    const missing = run('--backend', '@moba/no-such-backend', '--cases', PACKAGE_CASES_DIR);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toContain('cannot load backend module @moba/no-such-backend');
    expect(missing.stderr.trimEnd().split('\n')).toHaveLength(1);
  });

  it('fails when nothing ran: an empty --cases folder', () => {
    const empty = mkdtempSync(join(tmpdir(), 'moba-empty-'));
    mkdirSync(join(empty, 'sub'));
    const r = run('--backend', 'cpu', '--cases', empty);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/nothing to run: --cases .* holds no golden case \(\*\.json\)/);
    expect(r.stderr.trimEnd().split('\n')).toHaveLength(1);
  });

  it('fails when nothing ran: every selected property skipped on the backend', () => {
    const dir = mkdtempSync(join(tmpdir(), 'moba-narrow-'));
    const ref = fileURLToPath(new URL('../src/reference-backend.ts', import.meta.url));
    writeFileSync(join(dir, 'narrow.ts'), `import { createReferenceBackend } from ${JSON.stringify(ref)};\n` +
      "export const createBackend = () => createReferenceBackend({ name: 'narrow', caps: { dtypes: ['f32'], headDims: [16] } });\n");
    const r = run('--backend', join(dir, 'narrow.ts'), '--cases', join(PACKAGE_CASES_DIR, 'c05_mqa_k1_d59.json'));
    expect(r.last).toBe('0 passed, 0 failed, 1 skipped');
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^error: nothing ran: all 1 selected properties were skipped on narrow\n$/);
  });

  it('--help on stdout with exit 0; --version', () => {
    const h = run('--help');
    expect([h.code, h.stderr]).toEqual([0, '']);
    expect(h.stdout).toMatch(/^usage: moba-conformance/);
    expect(h.stdout).toContain(`at most ${MAX_NUM_RUNS}`);
    const v = run('--version');
    expect([v.code, v.stderr]).toEqual([0, '']);
    expect(v.last).toMatch(/^moba-conformance \d+\.\d+\.\d+$/);
  });

  it('runConformance settings reject a bad numRuns instead of clamping it', () => {
    expect(resolveSettings({ numRuns: 3 }).numRuns).toBe(3);
    for (const n of [-5, 0, 1.5, MAX_NUM_RUNS + 1, 1e20]) expect(() => resolveSettings({ numRuns: n }), String(n)).toThrow(/numRuns .* is invalid/);
  });

  it('the browser entry rejects a bad numRuns too (it clamped -5 to 1)', async () => {
    const b = createReferenceBackend();
    for (const n of [-5, 0, MAX_NUM_RUNS + 1]) await expect(runInBrowser(b, { numRuns: n }), String(n)).rejects.toThrow(/numRuns .* is invalid/);
    await b.destroy();
  });
});
