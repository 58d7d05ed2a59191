/**
 * `moba analyze --synthetic needle`: the FlashMoBA routing claim measured (needle.ts); flags, checks before any
 * work, the text table, --json and the SVG (measured and predicted needle hit rate against block size, per d).
 */
import { writeFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { type FlagSpecs, UsageError, checkOutputFile, flagHelp, parseFlags } from '@moba/testkit';
import { type NeedleReport, needleTopk, runNeedle } from './needle.js';
import { Progress } from './progress.js';

export const NEEDLE_FLAGS = {
  backend: { type: 'enum', values: ['auto', 'cpu', 'webgpu', 'cuda'], default: 'cpu', help: 'backend whose route() is measured' },
  tokens: { type: 'int', min: 2, max: 1 << 22, default: 16384, help: 'keys T (one sequence; the queries are its last rows)' },
  rows: { type: 'int', min: 1, max: 1 << 20, default: 1024, help: 'query rows per (d, B, Δμ) cell and trial, each with its own needle' },
  trials: { type: 'int', min: 1, max: 10000, default: 1, help: 'independent key sets per cell' },
  delta: { type: 'list', meta: 'X,Y,…', default: ['1', '2', '4'], help: 'needle score gaps Δμ (raw score; unit-norm q, keys N(0, I/d))' },
  'head-dims': { type: 'ints', min: 1, max: 512, default: [64, 128], help: 'head dims d' },
  'block-sizes': { type: 'ints', min: 1, max: 1 << 16, default: [16, 32, 64, 128, 256, 512], help: 'block sizes B' },
  fraction: { type: 'number', above: 0, max: 1, default: 1 / 16, help: 'attended fraction kept fixed: topk = round(fraction·T/B)' },
  span: { type: 'int', min: 1, max: 1 << 16, default: 8, help: 'tokens of a spread needle in the kconv comparison (Δμ/span each)' },
  kconv: { type: 'int', min: 0, max: 64, default: 4, meta: 'W', help: 'uniform kconv width (weights 1/W) of the comparison; 0: skip it' },
  'kconv-delta': { type: 'number', above: -1, max: 1000, default: 2, meta: 'X', help: 'the Δμ (one of --delta) of the kconv comparison' },
  seed: { type: 'int', min: 0, max: 2 ** 32 - 1, default: 1, help: 'random seed' },
  threads: { type: 'int', min: 1, max: 256, help: 'CPU worker threads' },
  svg: { type: 'string', meta: 'PATH', help: 'write the plot (measured vs predicted hit rate against B, per d) here' },
  json: { type: 'bool', help: 'print the report as JSON' },
} as const satisfies FlagSpecs;

export const NEEDLE_HELP = `usage: moba analyze --synthetic needle [flags]

Plants one needle key per query row (score gap Δμ over the other keys' mean) at a random position in a past
block among Gaussian keys, routes with the backend's route(), and prints the needle block's hit rate next to
the prediction of the statistical model in docs/routing-quality.md (SNR = Δμ·sqrt(d/(2B))), for every head
dim, block size and Δμ, with topk scaled so topk·B/T stays --fraction. With --kconv W > 0 it also compares a
needle spread over --span tokens with and without a uniform key convolution of width W.

flags:
${flagHelp(NEEDLE_FLAGS)}

example: moba analyze --synthetic needle --tokens 32K --rows 2048 --delta 0.5,1,2 --svg routing.svg
`;

interface Io {
  readonly stdout: { write(s: string): unknown };
  readonly stderr: { write(s: string): unknown; readonly isTTY?: boolean };
}

const pct = (x: number): string => `${(100 * x).toFixed(1)}%`.padStart(6);

export function formatNeedleReport(r: NeedleReport): string {
  const o = r.options;
  const L = [
    `needle routing on ${r.backend}: T ${o.tokens}, ${o.rows} rows × ${o.trials} trial(s) per cell, attended fraction ${o.fraction}, seed ${o.seed}`,
    `  hit = the needle's block is selected; predicted: Gaussian order-statistics model (docs/routing-quality.md)`,
    '',
    `    d      B  topk    Δμ    SNR  measured  95% interval    predicted  chance${o.kconv > 0 ? `  span ${o.span}  +kconv ${o.kconv}` : ''}`,
  ];
  for (const c of r.cells) {
    const inBand = c.predicted >= c.ci[0] && c.predicted <= c.ci[1] ? ' ' : '*';
    L.push(`${String(c.headDim).padStart(5)}  ${String(c.blockSize).padStart(5)}  ${String(c.topk).padStart(4)}  ${c.delta.toFixed(2).padStart(5)}  ${c.snr.toFixed(2).padStart(5)}`
      + `    ${pct(c.measured)}  ${pct(c.ci[0])}–${pct(c.ci[1])}    ${pct(c.predicted)}${inBand} ${pct(c.chance)}`
      + (c.spanPlain !== undefined ? `   ${pct(c.spanPlain)}    ${pct(c.spanKconv!)}` : o.kconv > 0 ? '        -         -' : ''));
  }
  L.push('', `* prediction outside the 95% interval. ${(r.ms / 1000).toFixed(1)} s`);
  return `${L.join('\n')}\n`;
}

const COLORS = ['#1f77b4', '#d62728', '#2ca02c', '#9467bd', '#ff7f0e', '#8c564b'];

/** Hit rate against log2 B: per (d, Δμ) a solid measured polyline and a dashed predicted one. */
export function needleSvg(r: NeedleReport): string {
  const W = 720, H = 420, m = { l: 55, r: 190, t: 40, b: 45 };
  const Bs = [...new Set(r.cells.map((c) => c.blockSize))].sort((a, b) => a - b);
  const lx0 = Math.log2(Bs[0]!), lx1 = Math.max(Math.log2(Bs[Bs.length - 1]!), lx0 + 1);
  const X = (B: number): number => m.l + ((Math.log2(B) - lx0) / (lx1 - lx0)) * (W - m.l - m.r);
  const Y = (y: number): number => H - m.b - y * (H - m.t - m.b);
  const out = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="11">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    `<text x="${(W - m.r + m.l) / 2}" y="18" text-anchor="middle" font-size="13">needle block hit rate vs block size (T ${r.options.tokens}, attended ${r.options.fraction})</text>`,
    `<line x1="${m.l}" y1="${H - m.b}" x2="${W - m.r}" y2="${H - m.b}" stroke="black"/>`,
    `<line x1="${m.l}" y1="${m.t}" x2="${m.l}" y2="${H - m.b}" stroke="black"/>`,
    ...Bs.map((B) => `<text x="${X(B).toFixed(1)}" y="${H - m.b + 15}" text-anchor="middle">${B}</text>`),
    ...[0, 0.25, 0.5, 0.75, 1].map((t) => `<text x="${m.l - 6}" y="${(Y(t) + 4).toFixed(1)}" text-anchor="end">${t.toFixed(2)}</text>`
      + `<line x1="${m.l}" y1="${Y(t).toFixed(1)}" x2="${W - m.r}" y2="${Y(t).toFixed(1)}" stroke="#ddd"/>`),
    `<text x="${(W - m.r + m.l) / 2}" y="${H - 8}" text-anchor="middle">block size B (log scale)</text>`,
    `<text x="14" y="${H / 2}" text-anchor="middle" transform="rotate(-90 14 ${H / 2})">needle block hit rate</text>`,
  ];
  const groups = [...new Set(r.cells.map((c) => `${c.headDim}|${c.delta}`))];
  groups.forEach((g, i) => {
    const cs = r.cells.filter((c) => `${c.headDim}|${c.delta}` === g).sort((a, b) => a.blockSize - b.blockSize);
    const color = COLORS[i % COLORS.length]!;
    const pts = (f: (c: (typeof cs)[number]) => number): string => cs.map((c) => `${X(c.blockSize).toFixed(1)},${Y(f(c)).toFixed(1)}`).join(' ');
    out.push(`<polyline fill="none" stroke="${color}" stroke-width="2" points="${pts((c) => c.measured)}"/>`);
    out.push(`<polyline fill="none" stroke="${color}" stroke-width="1.5" stroke-dasharray="5 3" points="${pts((c) => c.predicted)}"/>`);
    for (const c of cs) out.push(`<circle cx="${X(c.blockSize).toFixed(1)}" cy="${Y(c.measured).toFixed(1)}" r="2.5" fill="${color}"/>`);
    const [d, delta] = g.split('|');
    out.push(`<line x1="${W - m.r + 12}" y1="${m.t + 8 + 16 * i}" x2="${W - m.r + 30}" y2="${m.t + 8 + 16 * i}" stroke="${color}" stroke-width="2"/>`);
    out.push(`<text x="${W - m.r + 36}" y="${m.t + 12 + 16 * i}">d ${d}, Δμ ${delta}</text>`);
  });
  const ly = m.t + 16 * groups.length + 20;
  out.push(`<text x="${W - m.r + 12}" y="${ly}">solid: measured</text>`, `<text x="${W - m.r + 12}" y="${ly + 14}">dashed: predicted</text>`);
  out.push('</svg>');
  return `${out.join('\n')}\n`;
}

/** Runs `moba analyze --synthetic needle` with `argv` (the arguments after `--synthetic needle`). */
export async function needleCommand(argv: readonly string[], io: Io, version = ''): Promise<number> {
  const { flags: f, help, version: v } = parseFlags(argv, NEEDLE_FLAGS);
  if (help || v) {
    io.stdout.write(help ? NEEDLE_HELP : `${version}\n`);
    return 0;
  }
  const deltas = f.delta.map((s) => {
    const x = Number(s);
    if (!Number.isFinite(x) || x < 0 || x > 1000) throw new UsageError(`--delta ${s} is invalid: must be a comma list of numbers in [0, 1000]`);
    return x;
  });
  if (f.kconv > 0 && !deltas.includes(f['kconv-delta'])) throw new UsageError(`--kconv-delta ${f['kconv-delta']} is not one of --delta ${deltas.join(',')}`);
  if (f.threads !== undefined && f.backend !== 'cpu') throw new UsageError(`--threads applies to --backend cpu only, not ${f.backend}`);
  for (const B of f['block-sizes']) {
    const topk = needleTopk(f.tokens, B, f.fraction);
    if (topk < 2) throw new UsageError(`--block-sizes ${B} gives topk ${topk} at --tokens ${f.tokens} and --fraction ${f.fraction}: needs topk >= 2 (raise --tokens or --fraction)`);
    if (topk > 1024) throw new UsageError(`--block-sizes ${B} gives topk ${topk} at --tokens ${f.tokens} and --fraction ${f.fraction}: at most 1024 (lower --tokens or --fraction)`);
    if (f.rows >= f.tokens - B) throw new UsageError(`--rows ${f.rows} must be below --tokens − B = ${f.tokens - B} for --block-sizes ${B} (queries need past blocks)`);
    if (f.kconv > 0 && f.span > B) throw new UsageError(`--span ${f.span} is larger than --block-sizes ${B}: a spread needle lies inside one block`);
  }
  const heads = Math.max(...f['head-dims'].map((d) => Math.ceil(f.rows / Math.min(f.rows, d)) * d));
  if (f.tokens * heads > 2 ** 28) throw new UsageError('--tokens × (rows / d) × d is too large (at most 2^28 key elements; lower --tokens or --rows)');
  if (f.svg !== undefined) checkOutputFile('svg', f.svg);
  const progress = new Progress(io.stderr, 'moba analyze');
  progress.start('needle: generating keys');
  const r = await runNeedle({
    backend: f.backend, tokens: f.tokens, rows: f.rows, trials: f.trials, deltas, headDims: f['head-dims'], blockSizes: f['block-sizes'],
    fraction: f.fraction, span: f.span, kconv: f.kconv, kconvDelta: f['kconv-delta'], seed: f.seed, ...(f.threads !== undefined ? { threads: f.threads } : {}),
  }, (done, total) => progress.start(`needle cells ${done}/${total}`));
  progress.end();
  io.stdout.write(f.json ? `${JSON.stringify(r, null, 2)}\n` : formatNeedleReport(r));
  if (f.svg !== undefined) {
    writeFileSync(resolve(f.svg), needleSvg(r));
    if (!f.json) io.stdout.write(`wrote ${f.svg}\n`);
  }
  return 0;
}
