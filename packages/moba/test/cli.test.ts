/**
 * The `moba` CLI and the main job: `moba demo` run in-process at a small size (report numbers sane,
 * errors vs the f64 reference small, SVG well-formed), the spot check catching wrong results, bad
 * flags (exit 2) and MobaErrors (exit 1), `moba info`, and the entry script as a subprocess.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { Rng, createBackend, hostTensor, moba, mobaBackward, resolveConfig, sequences } from '../src/index.js';
import { sampleRows, spotCheck } from '../src/check.js';
import type { DemoReport } from '../src/demo.js';
import { formatInfo, main } from '../src/main.js';
import { wellFormed } from './xml.js';

const dir = mkdtempSync(join(tmpdir(), 'moba-cli-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

async function run(...argv: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  const code = await main(argv, { stdout: { write: (s: string) => (stdout += s) }, stderr: { write: (s: string) => (stderr += s) } });
  return { code, stdout, stderr };
}

const SMALL = ['--tokens', '1000', '--heads', '4', '--kv-heads', '2', '--head-dim', '24', '--block-size', '32', '--topk', '4', '--batch', '2', '--threads', '1'];


describe('moba demo', () => {
  it('runs the main job and reports sane numbers (--json)', async () => {
    const svg = join(dir, 'routing.svg');
    const r = await run('demo', ...SMALL, '--json', '--svg', svg);
    expect(r.stderr).not.toContain('error');
    expect(r.code).toBe(0);
    const rep = JSON.parse(r.stdout) as DemoReport; // stdout holds the JSON and nothing else
    expect(rep.backend.name).toBe('cpu');
    expect(rep.problem).toMatchObject({ T: 1000, Hq: 4, Hkv: 2, D: 24, batch: 2, seqlens: { min: 500, max: 500 }, kconvWidth: 3 });
    // errors against the float64 reference, f32
    expect(rep.accuracy.rows).toBe(64);
    for (const e of [rep.accuracy.out, rep.accuracy.lse, rep.accuracy.dq]) {
      expect(e.maxAbs).toBeLessThan(1e-4);
      expect(e.maxAbs).toBeGreaterThanOrEqual(0);
    }
    expect(rep.accuracy.routing.checked).toBe(64 * 4);
    expect(rep.accuracy.routing.valid).toBe(rep.accuracy.routing.checked);
    // 16 blocks per sequence, topk 4: a strict subset of the causal pairs
    expect(rep.attended.fraction).toBeGreaterThan(0);
    expect(rep.attended.fraction).toBeLessThan(1);
    const names = rep.phases.map((p) => p.name);
    expect(names).toEqual(expect.arrayContaining(['kconv', 'route', 'forward', 'backward', 'kconvBackward']));
    for (const p of rep.phases.filter((ph) => ph.flops !== null)) {
      expect(p.ms).toBeGreaterThan(0);
      expect(Number.isFinite(p.gflopsPerSec)).toBe(true);
      expect(p.gflopsPerSec!).toBeGreaterThan(0);
    }
    expect(rep.svg).toBe(svg);
    const text = readFileSync(svg, 'utf8');
    expect(text.startsWith('<svg')).toBe(true);
    expect(text.trimEnd().endsWith('</svg>')).toBe(true);
    expect(wellFormed(text)).toBe(true);
    expect(text).toContain('query block');
    expect(text).toContain('key block');
  });

  it('topk >= the number of blocks attends every causal pair; f16 errors stay at f16 level; text report', async () => {
    const r = await run('demo', '--tokens', '256', '--heads', '2', '--head-dim', '16', '--block-size', '16', '--topk', '16',
      '--dtype', 'f16', '--kconv', '0', '--threads', '1', '--no-svg');
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('100.00% of the causal query-key pairs');
    expect(r.stdout).toContain('backend   cpu (1 thread)');
    const err = /out\s+max abs (\S+)/.exec(r.stdout);
    expect(Number(err?.[1])).toBeLessThan(1e-2);
    expect(r.stdout).not.toContain('heatmap written');
  });

  it('rejects bad flags with exit code 2 and a clear message', async () => {
    const cases: [string[], RegExp][] = [
      [['demo', '--tokens', 'lots'], /--tokens lots is invalid: must be an integer in \[1, 16777216\]/],
      [['demo', '--topk', '0'], /--topk 0 is invalid/],
      [['demo', '--dtype', 'f64'], /--dtype f64 is invalid: must be one of f32, f16, bf16/],
      [['demo', '--tokkens', '8'], /unknown flag --tokkens \(did you mean --tokens\?\)/],
      [['demo', '--tokens'], /--tokens needs a value/],
      [['demo', '--heads', '6', '--kv-heads', '4'], /--heads 6 is not a multiple of --kv-heads 4/],
      [['demo', 'extra'], /unexpected argument 'extra'/],
      [['frobnicate'], /unknown command 'frobnicate'/],
    ];
    for (const [argv, msg] of cases) {
      const r = await run(...argv);
      expect(r.code, argv.join(' ')).toBe(2);
      expect(r.stderr).toMatch(/^error: /);
      expect(r.stderr).toMatch(msg);
      expect(r.stderr.trimEnd().split('\n'), argv.join(' ')).toHaveLength(1); // one line, no stack
      expect(r.stdout).toBe('');
    }
  });

  it('integer flags reject non-integers, out-of-range and absurd values in one line', async () => {
    const cases: [string[], RegExp][] = [
      [['--tokens', '1.5'], /--tokens 1\.5 is invalid: must be an integer in \[1, /],
      [['--tokens', '1e3'], /--tokens 1e3 is invalid/],
      [['--tokens', '99999999999999999999'], /--tokens 99999999999999999999 is invalid/],
      [['--tokens', '64M'], /--tokens 64M is invalid/],
      [['--heads', '0x10'], /--heads 0x10 is invalid/],
      [['--seed', '-1'], /--seed -1 is invalid/],
      [['--samples', '99999999999'], /--samples 99999999999 is invalid/],
      [['--block-size', '999999999'], /--block-size 999999999 is invalid/],
    ];
    for (const [argv, msg] of cases) {
      const r = await run('demo', ...argv);
      expect(r.code, argv.join(' ')).toBe(2);
      expect(r.stderr).toMatch(msg);
      expect(r.stderr.trimEnd().split('\n'), argv.join(' ')).toHaveLength(1);
    }
  });

  it('checks flag combinations and the --svg path before any work starts', async () => {
    const cases: [string[], RegExp][] = [
      [['--svg', join(dir, 'no-such-dir', 'x.svg')], /--svg .*no-such-dir.*: the folder .*no-such-dir does not exist/],
      [['--svg', dir], /--svg .* is a folder/],
      [['--tokens', '8M', '--heads', '1024', '--head-dim', '1024'], /too large/],
      [['--tokens', '100', '--batch', '101'], /--batch 101 is larger than --tokens 100/],
    ];
    for (const [argv, msg] of cases) {
      const r = await run('demo', ...argv);
      expect(r.code, argv.join(' ')).toBe(2);
      expect(r.stderr).toMatch(msg);
      expect(r.stderr.trimEnd().split('\n'), argv.join(' ')).toHaveLength(1); // not even a progress line: nothing ran
    }
  });

  it('one token per sequence at T = 150000 reports the sequence lengths (no spread of a large array)', async () => {
    const r = await run('demo', '--tokens', '150000', '--batch', '150000', '--heads', '1', '--head-dim', '2', '--block-size', '16',
      '--topk', '2', '--kconv', '0', '--threads', '1', '--samples', '4', '--no-svg', '--no-warmup', '--json');
    expect(r.stderr).not.toMatch(/error/);
    expect(r.code).toBe(0);
    expect((JSON.parse(r.stdout) as DemoReport).problem).toMatchObject({ T: 150000, batch: 150000, seqlens: { min: 1, max: 1 } });
  });

  it('prints MobaErrors as "error: <message>" with exit code 1', async () => {
    const r = await run('demo', '--backend', 'cuda', '--tokens', '64');
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^error: \[E_UNSUPPORTED\] backend 'cuda'/);
    for (const b of ['webgpu', 'cuda']) { // --threads with a GPU backend: refused before anything opens
      const t = await run('demo', '--backend', b, '--threads', '2', '--tokens', '64', '--no-svg');
      expect([t.code, t.stderr.split('\n')[0]], b).toEqual([1, `error: [E_RANGE] threads = 2 applies to the CPU backend only, not '${b}'`]);
    }
  });

  it('--help of each command exits 0', async () => {
    for (const argv of [['--help'], ['demo', '--help'], ['info', '--help']]) {
      const r = await run(...argv);
      expect(r.code).toBe(0);
      expect(r.stdout).toMatch(/usage: moba/);
    }
    expect((await run('demo', '--help')).stdout).toContain('--kv-heads');
  });
});

describe('moba commands', () => {
  it('an unknown command suggests the known ones (not "moba foo --help"); no command is one line too', async () => {
    const typo = await run('dmeo');
    expect(typo.code).toBe(2);
    expect(typo.stderr).toMatch(/^error: unknown command 'dmeo' \(did you mean demo\?\)/);
    const foo = await run('foo');
    expect(foo.code).toBe(2);
    expect(foo.stderr).toMatch(/unknown command 'foo': the commands are demo, decode, analyze, info, conformance/);
    const none = await run();
    expect(none.code).toBe(2);
    for (const r of [typo, foo, none]) {
      expect(r.stderr).not.toMatch(/moba (foo|dmeo) --help/);
      expect(r.stderr.trimEnd().split('\n')).toHaveLength(1);
    }
  });

  it('moba conformance --help prints the runner\'s flags on stdout with exit 0', async () => {
    const r = await run('conformance', '--help');
    expect(r.code).toBe(0);
    expect(r.stderr).toBe('');
    expect(r.stdout).toMatch(/usage: moba-conformance/);
    expect(r.stdout).toContain('--num-runs');
  });
});

describe('moba info', () => {
  it('names each backend\'s adapter (software or not) and why one is unavailable', () => {
    const text = formatInfo({ mobaTs: '0.1.0', node: 'v20', platform: 'linux x64', cores: 2, cpu: 'x' }, [
      { name: 'cuda', package: '@moba/backend-cuda', available: false, reason: 'no CUDA device found' },
      { name: 'webgpu', package: '@moba/backend-webgpu', available: true, version: '0.1.0', adapter: 'SwiftShader Device (Subzero) — software', software: true },
      { name: 'cpu', package: '@moba/backend-cpu', available: true, version: '0.1.0', adapter: '2 worker threads', software: false },
    ]);
    expect(text).toMatch(/cuda\s+not available\s+no CUDA device found/);
    expect(text).toMatch(/webgpu\s+available\s+@moba\/backend-webgpu 0\.1\.0, adapter SwiftShader Device \(Subzero\) \(software: 'auto' skips it\)/);
    expect(text).toMatch(/cpu\s+available\s+@moba\/backend-cpu 0\.1\.0, adapter 2 worker threads\n/);
  });

  it('lists every backend kind; cpu is available', async () => {
    const r = await run('info', '--json');
    expect(r.code).toBe(0);
    const info = JSON.parse(r.stdout) as { cores: number; backends: { name: string; available: boolean; reason?: string }[] };
    expect(info.backends.map((b) => b.name)).toEqual(['cuda', 'webgpu', 'cpu']);
    expect(info.backends.find((b) => b.name === 'cpu')?.available).toBe(true);
    for (const b of info.backends.filter((x) => !x.available)) expect(b.reason).toBeTruthy();
    expect(info.cores).toBeGreaterThanOrEqual(1);
  });
});

describe('spot check', () => {
  it('is small for correct results and catches a wrong output, gradient or routing', async () => {
    const [T, Hq, Hkv, D] = [300, 2, 1, 8];
    const rng = new Rng(7);
    const t = (h: number) => hostTensor('f32', [T, h, D], rng.normals(T * h * D));
    const x = { q: t(Hq), k: t(Hkv), v: t(Hkv), dOut: t(Hq), w: hostTensor('f32', [Hkv * D, 3], rng.normals(Hkv * D * 3, 0.1)) };
    const cu = Int32Array.of(0, 120, T);
    const cfg = { blockSize: 16, topk: 3 };
    const b = await createBackend('cpu', { threads: 1 });
    const res = await moba(b, { q: x.q, k: x.k, v: x.v, cuSeqlens: cu, kconvWeight: x.w }, cfg);
    const g = await mobaBackward(b, res.ctx, x.dOut);
    const input = {
      shape: { T, Hq, Hkv, D, dtype: 'f32' as const }, layout: { cuSeqlens: cu }, seqs: sequences({ cuSeqlens: cu }, 16),
      cfg: resolveConfig(cfg, D), ...x, indices: await b.routingIndices(res.routing),
      out: await b.download(res.out), lse: await b.download(res.lse), dq: await b.download(g.dq),
    };
    await b.destroy();
    const rows = sampleRows(T, 40, () => rng.next());
    const ok = spotCheck(input, rows);
    expect(Math.max(ok.out.maxAbs, ok.lse.maxAbs, ok.dq.maxAbs)).toBeLessThan(1e-4);
    expect(ok.routing.identical).toBe(ok.routing.checked);

    const row = rows[rows.length - 1]!; // far enough into its sequence to have past blocks to choose from
    const bump = (h: typeof input.out, i: number) => {
      const data = Float32Array.from(h.data as Float32Array);
      data[i]! += 0.01;
      return { ...h, data };
    };
    expect(spotCheck({ ...input, out: bump(input.out, row * Hq * D + 3) }, rows).out.maxAbs).toBeGreaterThan(5e-3);
    expect(spotCheck({ ...input, lse: bump(input.lse, row * Hq) }, rows).lse.maxAbs).toBeGreaterThan(5e-3);
    expect(spotCheck({ ...input, dq: bump(input.dq, row * Hq * D) }, rows).dq.maxAbs).toBeGreaterThan(5e-3);
    // swap one selected past block of `row` for an unselected one: the router check notices
    const idx = Int32Array.from(input.indices);
    const sel = Array.from(idx.subarray(row * Hq * 3, row * Hq * 3 + 3));
    const s = row >= 120 ? row - 120 : row;
    const cb = Math.floor(s / 16);
    const other = Array.from({ length: cb }, (_, j) => j).find((j) => !sel.includes(j));
    expect(other).toBeDefined();
    const picked = [other!, ...sel.filter((j) => j !== cb).slice(1), cb].sort((a, b2) => a - b2);
    idx.set(picked, row * Hq * 3);
    expect(spotCheck({ ...input, indices: idx }, rows).routing.identical).toBe(ok.routing.checked - 1);
  });
});

describe('every CLI (entry scripts as subprocesses)', () => {
  const root = fileURLToPath(new URL('../../..', import.meta.url));
  const node = (script: string, args: string[]) => new Promise<{ code: number; stdout: string; stderr: string }>((done) => {
    execFile(process.execPath, ['--conditions=@moba/source', '--import', 'tsx', script, ...args], { cwd: root }, (e, stdout, stderr) =>
      done({ code: e ? (e as { code?: number }).code ?? 1 : 0, stdout, stderr }));
  });
  const CLIS: [string, string[]][] = [
    ['packages/moba/src/cli.ts', []], ['packages/moba/src/cli.ts', ['demo']], ['packages/testkit/src/cli.ts', []],
    ['bench/run.ts', []], ['examples/web/serve.ts', []],
  ];

  it('--help and -h on stdout with exit 0, --version prints a version, a bad flag is one line with exit 2', async () => {
    for (const [script, pre] of CLIS) {
      const what = [script, ...pre].join(' ');
      for (const h of script === CLIS[0]![0] ? ['--help', '-h'] : ['--help']) {
        const help = await node(script, [...pre, h]);
        expect([help.code, help.stderr], `${what} ${h}`).toEqual([0, '']);
        expect(help.stdout, what).toMatch(/usage: /);
      }
      const v = await node(script, [...pre, '--version']);
      expect([v.code, v.stderr], `${what} --version`).toEqual([0, '']);
      expect(v.stdout.trim(), what).toMatch(/^(\S+ )?\d+\.\d+\.\d+$/);
      const bad = await node(script, [...pre, '--no-such-flag']);
      expect(bad.code, `${what} --no-such-flag`).toBe(2);
      expect(bad.stderr.trimEnd().split('\n'), what).toHaveLength(1);
      expect(bad.stderr, what).toMatch(/^error: unknown flag --no-such-flag/);
      expect(bad.stdout, what).toBe('');
    }
  });

  it('sets the exit code: 2 for a bad flag value', async () => {
    const bad = await node('packages/moba/src/cli.ts', ['demo', '--block-size', 'x']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('error: --block-size x is invalid');
  });
});
