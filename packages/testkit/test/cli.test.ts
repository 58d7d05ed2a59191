/**
 * The moba-conformance CLI, run from sources as a child process: golden cases with a built-in backend
 * name and with a module path, the summary line and exit codes, --json, and bad usage.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { PACKAGE_CASES_DIR } from '../src/golden.js';
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

  it('rejects bad usage with exit code 2', () => {
    expect(run('--cases', PACKAGE_CASES_DIR).code).toBe(2);
    expect(run('--backend', 'cpu', '--seed', 'x').code).toBe(2);
    const missing = run('--backend', '@moba/no-such-backend', '--cases', PACKAGE_CASES_DIR);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toContain('cannot load backend module @moba/no-such-backend');
  });
});
