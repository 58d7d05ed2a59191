// Serves each bundled page (esbuild's, Vite's) over http, opens it in headless Chromium (SwiftShader WebGPU)
// and checks what it computed: 'auto' skips the software adapter (CPU), allowSoftwareAdapter takes WebGPU,
// both match dense attention. Usage: node check-browser.mjs <label>=<dir> ...
import { createReadStream, existsSync, statSync } from 'node:fs';
import { createServer } from 'node:http';
import { createRequire } from 'node:module';
import { extname, join, normalize } from 'node:path';

const root = new URL('../../packages/backend-webgpu/package.json', import.meta.url);
const { chromium } = createRequire(root)('playwright-core');
const CHROMIUM = process.env.MOBA_CHROMIUM ?? '/usr/bin/chromium';
const TYPES = { '.html': 'text/html', '.js': 'text/javascript', '.mjs': 'text/javascript', '.json': 'application/json', '.map': 'application/json' };

function serve(dir) {
  const server = createServer((req, res) => {
    const path = normalize(decodeURIComponent(new URL(req.url, 'http://x').pathname)).replace(/^(\.\.[/\\])+/, '');
    let file = join(dir, path);
    if (existsSync(file) && statSync(file).isDirectory()) file = join(file, 'index.html');
    if (!existsSync(file)) return void res.writeHead(404).end();
    res.writeHead(200, { 'content-type': TYPES[extname(file)] ?? 'application/octet-stream' });
    createReadStream(file).pipe(res);
  });
  return new Promise((ok) => server.listen(0, '127.0.0.1', () => ok(server)));
}

const browser = await chromium.launch({
  executablePath: CHROMIUM, headless: true, timeout: 60_000,
  args: ['--headless', '--no-sandbox', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--disable-quic', '--no-first-run', '--enable-unsafe-webgpu'],
});
let failed = false;
try {
  for (const arg of process.argv.slice(2)) {
    const [label, dir] = arg.split('=');
    const server = await serve(dir);
    const page = await browser.newPage();
    const errors = [];
    page.on('pageerror', (e) => errors.push(String(e)));
    await page.goto(`http://127.0.0.1:${server.address().port}/`);
    await page.waitForFunction(() => window.__result !== undefined, null, { timeout: 120_000 });
    const r = await page.evaluate(() => window.__result);
    await page.close();
    server.close();
    const webgpu = r.backends?.find((b) => b.name === 'webgpu');
    const ok = !r.error && errors.length === 0 && r.auto?.ok && r.autoSoftware?.ok && r.auto.backend === 'cpu' && r.autoSoftware.backend === 'webgpu'
      && webgpu?.software === true && Math.abs(r.auto.outSum - r.autoSoftware.outSum) < 1e-2;
    console.log(`browser ${label}: ${ok ? 'ok' : 'FAILED'} ${JSON.stringify({ auto: r.auto, autoSoftware: r.autoSoftware, webgpu: webgpu && { adapter: webgpu.adapter, software: webgpu.software }, error: r.error, errors })}`);
    failed ||= !ok;
  }
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);
