#!/usr/bin/env node
// Line limits (STYLE R15): every source file of the packages, the bench, the examples and the scripts has at
// most LIMIT lines, except the files listed below with the reason they are longer. Raising a limit or adding
// an exception takes an explicit commit that edits this list. Exits 1 and names every file over its limit.
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const LIMIT = 300;
const ROOTS = ['packages', 'bench', 'examples', 'scripts'];
const EXT = /\.(ts|mjs|js|cu|sh)$/;
const SKIP = new Set(['node_modules', 'dist', '.device', 'results']);

/** Files allowed past LIMIT: path → [their own limit, why]. */
const EXCEPTIONS = {
  'packages/backend-cuda/kernels/backward.cu': [520, 'the H200 tensor-core backward (dK/dV with dQ partials) plus the generic kernels; frozen while its bench numbers are the reference'],
  'packages/backend-cuda/kernels/route.cu': [490, 'the tensor-core fused router and the generic one; frozen with the H200 numbers'],
  'packages/backend-cuda/kernels/forward.cu': [470, 'key-major tensor-core forward, window forward and generic forward; frozen with the H200 numbers'],
  'packages/backend-cuda/scripts/gpu-check.ts': [370, 'the whole H200 acceptance run in one bundle: conformance, golden cases, the 64K routing check, fast vs generic kernels, timings, and the wiring of the cache and qk steps'],
  'packages/backend-cuda/test/host.test.ts': [390, 'every GPU-free check of the CUDA backend: launch planning, memory planning, argument tables against the .cu signatures'],
  'bench/gpu-report.ts': [380, 'the published peer numbers as data tables next to the report that compares against them'],
  'bench/gpu.ts': [350, 'one GPU bench run: every size and kernel of the configuration in one process, device-synchronised timings'],
};

const root = join(fileURLToPath(import.meta.url), '../..');
const over = [];
let files = 0;
const walk = (dir) => {
  for (const name of readdirSync(dir)) {
    if (SKIP.has(name) || name.startsWith('.')) continue;
    const p = join(dir, name);
    if (statSync(p).isDirectory()) walk(p);
    else if (EXT.test(name) && !name.endsWith('.d.ts')) check(p);
  }
};
const check = (p) => {
  files++;
  const rel = relative(root, p).split('\\').join('/');
  const text = readFileSync(p, 'utf8');
  const lines = text.length === 0 ? 0 : text.split('\n').length - (text.endsWith('\n') ? 1 : 0);
  const limit = EXCEPTIONS[rel]?.[0] ?? LIMIT;
  if (lines > limit) over.push(`${rel}: ${lines} lines > ${limit}${EXCEPTIONS[rel] ? ' (its listed exception)' : ''}`);
};
for (const r of ROOTS) walk(join(root, r));
for (const rel of Object.keys(EXCEPTIONS)) {
  try { statSync(join(root, rel)); } catch { over.push(`${rel}: listed as an exception but missing (remove it from the list)`); }
}
if (over.length) {
  console.error(`check-lines: ${over.length} file(s) over their line limit (${LIMIT} unless listed in scripts/check-lines.mjs):`);
  for (const o of over) console.error(`  ${o}`);
  process.exit(1);
}
console.log(`check-lines: ${files} files, each within ${LIMIT} lines or its listed exception (${Object.keys(EXCEPTIONS).length})`);
