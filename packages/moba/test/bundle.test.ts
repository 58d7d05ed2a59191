/**
 * moba-ts inside bundles (from the workspace sources, through `@moba/source`): esbuild must see the backend
 * packages (literal dynamic imports), a Node bundle run from a folder without node_modules must create the CPU
 * backend and compute, and a browser bundle with default settings must build without Dawn (`webgpu`) or any
 * Node built-in. The same from the packed tarballs, with Vite and Chromium too: scripts/user-paths/run.sh.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';
import { afterAll, describe, expect, it } from 'vitest';

const SRC = fileURLToPath(new URL('../src/index.ts', import.meta.url));
const dirs: string[] = [];
const temp = (): string => {
  const d = mkdtempSync(join(tmpdir(), 'moba-bundle-'));
  dirs.push(d);
  return d;
};
afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

describe('moba-ts in bundles', () => {
  it('an esbuild Node bundle (no node_modules) runs createBackend("cpu") and moba', async () => {
    const dir = temp();
    writeFileSync(join(dir, 'entry.ts'), `
import { Rng, createBackend, hostTensor, moba } from ${JSON.stringify(SRC)};
const [T, H, D] = [128, 1, 16];
const rng = new Rng(1);
const rand = () => hostTensor('f32', [T, H, D], rng.normals(T * H * D));
const b = await createBackend('cpu', { threads: 1 });
const { out } = await moba(b, { q: rand(), k: rand(), v: rand(), cuSeqlens: Int32Array.of(0, T) }, { blockSize: 32, topk: 2 });
const o = await b.download(out);
console.log(JSON.stringify({ name: b.name, n: o.data.length, finite: o.data.every(Number.isFinite) }));
await b.destroy();
`);
    await build({ entryPoints: [join(dir, 'entry.ts')], outfile: join(dir, 'out/app.mjs'), bundle: true, platform: 'node', format: 'esm', conditions: ['@moba/source'], logLevel: 'silent' });
    const text = execFileSync(process.execPath, ['app.mjs'], { cwd: join(dir, 'out'), encoding: 'utf8', timeout: 60_000 });
    expect(JSON.parse(text)).toEqual({ name: 'cpu', n: 128 * 16, finite: true });
  }, 60_000);

  it('an esbuild browser bundle with default settings holds the CPU, WebGPU and CUDA entries but no Dawn and no node: import', async () => {
    const dir = temp();
    writeFileSync(join(dir, 'entry.ts'), `export { createBackend, listBackends } from ${JSON.stringify(SRC)};\n`);
    const r = await build({ entryPoints: [join(dir, 'entry.ts')], outfile: join(dir, 'out/page.js'), bundle: true, platform: 'browser', format: 'esm', conditions: ['@moba/source'], logLevel: 'silent', metafile: true });
    const inputs = Object.keys(r.metafile!.inputs);
    expect(inputs.some((f) => f.includes('backend-cpu/src/host-web.ts'))).toBe(true);
    expect(inputs.some((f) => f.includes('backend-webgpu/src/dawn-web.ts'))).toBe(true);
    expect(inputs.some((f) => f.includes('backend-cuda/src/browser.ts'))).toBe(true);
    expect(inputs.filter((f) => /node_modules\/(\.pnpm\/)?webgpu|koffi|host-node|dawn-node|driver\.ts/.test(f))).toEqual([]);
    expect(readFileSync(join(dir, 'out/page.js'), 'utf8')).not.toMatch(/["']node:/);
  }, 60_000);
});
