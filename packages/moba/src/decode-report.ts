/** The text report of `moba decode` and its SVG: step latency against context length, MoBA and dense. */
import type { DecodeReport } from './decode.js';

const f = (x: number, d = 3): string => x.toFixed(d);

export function formatDecodeReport(r: DecodeReport): string {
  const p = r.problem;
  const L = [
    `moba decode on ${r.backend}: ${p.batch} sequence(s), prompt ${p.tokens} tokens (prefill chunks of ${p.chunk}), ${p.steps} decode steps`,
    `  Hq ${p.heads}, Hkv ${p.kvHeads}, D ${p.headDim}, ${p.dtype}, block ${p.blockSize}, topk ${p.topk}${p.kconv ? `, kconv ${p.kconv}` : ''}`,
    `prefill: ${f(r.prefill.ms, 1)} ms (${f(r.prefill.tokensPerSecond, 0)} tokens/s)`,
    `decode step (append + attend, waited for): median ${f(r.medianMs)} ms, ${f(r.tokensPerSecond, 0)} tokens/s`,
    r.denseMedianMs !== null
      ? `dense step on the same cache (every block selected): median ${f(r.denseMedianMs)} ms: MoBA ${f(r.denseMedianMs / r.medianMs, 1)}× faster`
      : `dense step: not run (${r.denseSkipped})`,
    r.checked > 0
      ? `checked ${r.checked} step(s) against the float64 reference: max abs error ${r.worstError!.toExponential(2)} (bound ${r.errorBound.toExponential(2)}) ${r.worstError! <= r.errorBound ? 'ok' : 'FAILED'}`
      : 'no step checked against the reference (--check-every 0)',
    `cache: ${r.cacheStats.usedPages} of ${r.cacheStats.pages} pages used, ${(r.cacheStats.poolBytes / 2 ** 20).toFixed(1)} MiB pool`,
    '',
    '  step  context   MoBA ms  dense ms',
  ];
  const every = Math.max(1, Math.ceil(r.steps.length / 16));
  for (const s of r.steps) {
    if (s.step % every !== 0 && s.step !== r.steps.length && s.step !== 1) continue;
    L.push(`${String(s.step).padStart(6)}  ${String(s.context).padStart(7)}  ${f(s.ms).padStart(8)}  ${s.denseMs === null ? '       -' : f(s.denseMs).padStart(8)}${s.maxAbsError !== undefined ? `  err ${s.maxAbsError.toExponential(2)}` : ''}`);
  }
  return `${L.join('\n')}\n`;
}

/** Step latency (ms) against context length, one polyline per series, with axes and a legend. */
export function decodeSvg(r: DecodeReport): string {
  const W = 640, H = 360, m = { l: 60, r: 20, t: 40, b: 45 };
  const series: { name: string; color: string; pts: [number, number][] }[] = [
    { name: 'MoBA step (append + attend)', color: '#1f77b4', pts: r.steps.map((s) => [s.context, s.ms]) },
  ];
  const dense = r.steps.flatMap((s): [number, number][] => (s.denseMs === null ? [] : [[s.context, s.denseMs]]));
  if (dense.length) series.push({ name: 'dense step, same cache', color: '#d62728', pts: dense });
  const xs = series.flatMap((s) => s.pts.map((p) => p[0]));
  const ys = series.flatMap((s) => s.pts.map((p) => p[1]));
  const [x0, x1] = [Math.min(...xs), Math.max(...xs, Math.min(...xs) + 1)];
  const y1 = Math.max(...ys, 1e-3) * 1.1;
  const X = (x: number): number => m.l + ((x - x0) / (x1 - x0)) * (W - m.l - m.r);
  const Y = (y: number): number => H - m.b - (y / y1) * (H - m.t - m.b);
  const esc = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;');
  const ticks = [0, 0.25, 0.5, 0.75, 1];
  const out = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="11">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    `<text x="${W / 2}" y="18" text-anchor="middle" font-size="13">${esc(`moba decode on ${r.backend}: step latency vs context`)}</text>`,
    `<line x1="${m.l}" y1="${H - m.b}" x2="${W - m.r}" y2="${H - m.b}" stroke="black"/>`,
    `<line x1="${m.l}" y1="${m.t}" x2="${m.l}" y2="${H - m.b}" stroke="black"/>`,
    ...ticks.map((t) => `<text x="${X(x0 + t * (x1 - x0)).toFixed(1)}" y="${H - m.b + 15}" text-anchor="middle">${Math.round(x0 + t * (x1 - x0))}</text>`),
    ...ticks.map((t) => `<text x="${m.l - 6}" y="${(Y(t * y1) + 4).toFixed(1)}" text-anchor="end">${(t * y1).toFixed(2)}</text>`),
    `<text x="${W / 2}" y="${H - 8}" text-anchor="middle">context (tokens per sequence)</text>`,
    `<text x="14" y="${H / 2}" text-anchor="middle" transform="rotate(-90 14 ${H / 2})">ms per step</text>`,
  ];
  series.forEach((s, i) => {
    out.push(`<polyline fill="none" stroke="${s.color}" stroke-width="1.5" points="${s.pts.map(([x, y]) => `${X(x).toFixed(1)},${Y(y).toFixed(1)}`).join(' ')}"/>`);
    out.push(`<rect x="${m.l + 10}" y="${m.t + 4 + 16 * i}" width="12" height="3" fill="${s.color}"/>`);
    out.push(`<text x="${m.l + 28}" y="${m.t + 9 + 16 * i}">${esc(s.name)}</text>`);
  });
  out.push('</svg>');
  return `${out.join('\n')}\n`;
}
