/** The text report of `moba analyze`, its JSON form, and its SVG: recall against attended fraction, one curve per B. */
import type { AnalyzeResult, AnalyzeRow } from './analyze.js';

/** What the report says about where the inputs came from (a file list or the synthetic generator). */
export interface AnalyzeSource {
  readonly description: string;
}

/** The JSON of `moba analyze --json`: the source and the result. */
export function analyzeJson(r: AnalyzeResult, src: AnalyzeSource): string {
  return `${JSON.stringify({ source: src.description, ...r }, null, 2)}\n`;
}

const pct = (x: number): string => `${(100 * x).toFixed(1)}%`;
const fx = (x: number, d = 3): string => x.toFixed(d);
/** A recall: 3 decimals, or 2 significant digits below 0.001 (p1 of rows whose mass lies elsewhere). */
const rc = (x: number): string => (x === 0 || x >= 0.001 ? x.toFixed(3) : x.toExponential(1));

export function formatAnalyzeReport(r: AnalyzeResult, src: AnalyzeSource): string {
  const s = r.shape;
  const L = [
    `moba analyze on ${r.backend}: ${src.description}`,
    `  T ${s.T} (${s.sequences} sequence${s.sequences === 1 ? '' : 's'}), Hq ${s.Hq}, Hkv ${s.Hkv}, D ${s.D}, ${s.dtype}; dense side by ${r.dense}`,
    r.vFromK ? '  no v given: the values are the keys (v = k), so the output error is that of attention over k' : '',
    `  recall: dense causal softmax mass inside the MoBA selection, over all ${s.T} rows × ${s.Hq} heads (exp(lse_moba − lse_dense))`,
    r.sampledRows > 0
      ? `  top-1 hit: dense top-1 key in a selected block, sampled on ${r.sampledRows} of ${s.T} rows × ${s.Hq} heads`
      : '  top-1 hit: not computed (0 sampled rows)',
    '  attended: attended / causal pairs; FLOPs ×: dense / MoBA forward (route + attend); out err: relative RMS vs dense',
    '',
    `${'B'.padStart(6)}${'topk'.padStart(6)}${'kconv'.padStart(7)}${'recall'.padStart(9)}${'p10'.padStart(8)}${'p1'.padStart(8)}${'top-1'.padStart(8)}${'attended'.padStart(10)}${'FLOPs ×'.padStart(9)}${'bytes ×'.padStart(9)}${'out err'.padStart(10)}`,
  ].filter((l, i) => l !== '' || i > 3);
  for (const x of r.rows) {
    L.push([
      String(x.blockSize).padStart(6), String(x.topk).padStart(6), String(x.kconv || '-').padStart(7),
      rc(x.recall.mean).padStart(9), rc(x.recall.p10).padStart(8), rc(x.recall.p1).padStart(8),
      (x.top1HitRate === null ? '-' : pct(x.top1HitRate)).padStart(8), pct(x.attendedFraction).padStart(10),
      fx(x.flops.savings, 1).padStart(9), fx(x.bytes.savings, 2).padStart(9), x.outRelRms.toExponential(2).padStart(10),
    ].join(''));
  }
  return `${L.join('\n')}\n`;
}

const COLORS = ['#1f77b4', '#d62728', '#2ca02c', '#9467bd', '#ff7f0e', '#17becf', '#8c564b', '#e377c2'];

/** One curve per (block size, kconv): mean recall against attended fraction, points ordered by topk. */
export function analyzeSvg(r: AnalyzeResult): string {
  const W = 640, H = 400, m = { l: 60, r: 160, t: 40, b: 45 };
  const groups = new Map<string, AnalyzeRow[]>();
  for (const x of r.rows) {
    const key = `B ${x.blockSize}${x.kconv ? `, kconv ${x.kconv}` : ''}`;
    groups.set(key, [...(groups.get(key) ?? []), x]);
  }
  const xMax = Math.min(1, Math.max(...r.rows.map((x) => x.attendedFraction)) * 1.1) || 1;
  const X = (x: number): number => m.l + (x / xMax) * (W - m.l - m.r);
  const Y = (y: number): number => H - m.b - y * (H - m.t - m.b);
  const esc = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/"/g, '&quot;');
  const ticks = [0, 0.25, 0.5, 0.75, 1];
  const s = r.shape;
  const out = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="11">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    `<text x="${(W - m.r + m.l) / 2}" y="18" text-anchor="middle" font-size="13">${esc(`moba analyze: recall vs attended fraction (T ${s.T}, Hq ${s.Hq}, D ${s.D})`)}</text>`,
    `<line x1="${m.l}" y1="${H - m.b}" x2="${W - m.r}" y2="${H - m.b}" stroke="black"/>`,
    `<line x1="${m.l}" y1="${m.t}" x2="${m.l}" y2="${H - m.b}" stroke="black"/>`,
    ...ticks.map((t) => `<text x="${X(t * xMax).toFixed(1)}" y="${H - m.b + 15}" text-anchor="middle">${pct(t * xMax)}</text>`),
    ...ticks.map((t) => `<text x="${m.l - 6}" y="${(Y(t) + 4).toFixed(1)}" text-anchor="end">${t.toFixed(2)}</text>`),
    `<text x="${(W - m.r + m.l) / 2}" y="${H - 8}" text-anchor="middle">attended fraction of causal pairs</text>`,
    `<text x="14" y="${H / 2}" text-anchor="middle" transform="rotate(-90 14 ${H / 2})">mean recall of dense attention</text>`,
  ];
  [...groups.entries()].forEach(([name, pts], i) => {
    const color = COLORS[i % COLORS.length]!;
    const sorted = [...pts].sort((a, b) => a.attendedFraction - b.attendedFraction);
    const xy = sorted.map((p) => `${X(p.attendedFraction).toFixed(1)},${Y(p.recall.mean).toFixed(1)}`);
    out.push(`<polyline class="curve" fill="none" stroke="${color}" stroke-width="1.5" points="${xy.join(' ')}"/>`);
    for (const p of sorted) {
      out.push(`<circle cx="${X(p.attendedFraction).toFixed(1)}" cy="${Y(p.recall.mean).toFixed(1)}" r="3" fill="${color}"><title>${esc(`${name}, topk ${p.topk}: recall ${fx(p.recall.mean)}, attended ${pct(p.attendedFraction)}`)}</title></circle>`);
    }
    out.push(`<rect x="${W - m.r + 12}" y="${m.t + 4 + 16 * i}" width="12" height="3" fill="${color}"/>`);
    out.push(`<text x="${W - m.r + 30}" y="${m.t + 9 + 16 * i}">${esc(name)}</text>`);
  });
  out.push('</svg>');
  return `${out.join('\n')}\n`;
}
