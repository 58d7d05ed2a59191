/**
 * The routing heatmap of `moba demo`: how often each key block is selected by the queries of each query
 * block (sequence-local block numbers, summed over heads and sequences), as a standalone SVG. Large
 * grids are binned to at most `maxCells` per side; colours follow a log scale so the sparse past
 * selections stay visible next to the always-selected diagonal.
 */
import type { RoutingCounts } from '@moba/core';

// A perceptual sequential scale (dark blue → teal → yellow), interpolated between stops.
const STOPS: readonly [number, number, number][] = [
  [68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37],
];

function color(x: number): string {
  const f = Math.min(1, Math.max(0, x)) * (STOPS.length - 1);
  const i = Math.min(STOPS.length - 2, Math.floor(f));
  const a = STOPS[i]!;
  const b = STOPS[i + 1]!;
  const u = f - i;
  const hex = (n: number): string => Math.round(n).toString(16).padStart(2, '0');
  return `#${hex(a[0] + (b[0] - a[0]) * u)}${hex(a[1] + (b[1] - a[1]) * u)}${hex(a[2] + (b[2] - a[2]) * u)}`;
}

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

/** Round tick positions (in blocks) for an axis of `n` blocks. */
function ticks(n: number): number[] {
  const raw = n / 6;
  const p = 10 ** Math.floor(Math.log10(Math.max(1, raw)));
  const step = [1, 2, 5, 10].map((m) => m * p).find((s) => s >= raw) ?? 10 * p;
  const out: number[] = [];
  for (let v = 0; v < n; v += step) out.push(v);
  return out;
}

/** Renders the counts as an SVG document (a string). */
export function heatmapSvg(rc: RoutingCounts, opts: { title: string; subtitle?: string; maxCells?: number }): string {
  const { nb, counts } = rc;
  const bin = Math.max(1, Math.ceil(nb / (opts.maxCells ?? 128))); // blocks per cell
  const cells = Math.ceil(nb / bin);
  const grid = new Float64Array(cells * cells);
  for (let qb = 0; qb < nb; qb++) {
    for (let kb = 0; kb < nb; kb++) grid[Math.floor(qb / bin) * cells + Math.floor(kb / bin)]! += counts[qb * nb + kb]!;
  }
  const max = grid.reduce((a, b) => Math.max(a, b), 0);
  const scale = (v: number): number => (max > 0 ? Math.log1p(v) / Math.log1p(max) : 0);

  const plot = 512;
  const cell = plot / cells;
  const left = 70;
  const top = 64;
  const legendX = left + plot + 24;
  const width = legendX + 90;
  const height = top + plot + 56;
  const f = (x: number): string => (Math.round(x * 100) / 100).toString();
  const parts: string[] = [];
  parts.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="12">`);
  parts.push(`<title>${esc(opts.title)}</title>`);
  parts.push(`<rect width="${width}" height="${height}" fill="#ffffff"/>`);
  parts.push(`<text x="${left}" y="22" font-size="15" font-weight="bold">${esc(opts.title)}</text>`);
  if (opts.subtitle) parts.push(`<text x="${left}" y="40" fill="#444">${esc(opts.subtitle)}</text>`);
  // -- cells: background = zero, then every non-zero cell --
  parts.push(`<rect x="${left}" y="${top}" width="${plot}" height="${plot}" fill="${color(0)}"/>`);
  parts.push('<g shape-rendering="crispEdges">');
  for (let r = 0; r < cells; r++) {
    for (let c = 0; c < cells; c++) {
      const v = grid[r * cells + c]!;
      if (v > 0) parts.push(`<rect x="${f(left + c * cell)}" y="${f(top + r * cell)}" width="${f(cell + 0.02)}" height="${f(cell + 0.02)}" fill="${color(scale(v))}"/>`);
    }
  }
  parts.push('</g>');
  // -- axes: ticks in block numbers --
  parts.push(`<rect x="${left}" y="${top}" width="${plot}" height="${plot}" fill="none" stroke="#333"/>`);
  for (const tb of ticks(nb)) {
    const pos = (tb / nb) * plot;
    parts.push(`<line x1="${f(left + pos)}" y1="${top + plot}" x2="${f(left + pos)}" y2="${top + plot + 5}" stroke="#333"/>`);
    parts.push(`<text x="${f(left + pos)}" y="${top + plot + 18}" text-anchor="middle">${tb}</text>`);
    parts.push(`<line x1="${left - 5}" y1="${f(top + pos)}" x2="${left}" y2="${f(top + pos)}" stroke="#333"/>`);
    parts.push(`<text x="${left - 8}" y="${f(top + pos + 4)}" text-anchor="end">${tb}</text>`);
  }
  const binNote = bin > 1 ? ` (${bin} blocks per cell)` : '';
  parts.push(`<text x="${left + plot / 2}" y="${top + plot + 40}" text-anchor="middle">key block${binNote}</text>`);
  parts.push(`<text transform="translate(${left - 46} ${top + plot / 2}) rotate(-90)" text-anchor="middle">query block${binNote}</text>`);
  // -- legend: log colour scale labelled in counts --
  const steps = 64;
  parts.push('<g shape-rendering="crispEdges">');
  for (let i = 0; i < steps; i++) {
    parts.push(`<rect x="${legendX}" y="${f(top + plot - ((i + 1) * plot) / steps)}" width="16" height="${f(plot / steps + 0.5)}" fill="${color(i / (steps - 1))}"/>`);
  }
  parts.push('</g>');
  parts.push(`<rect x="${legendX}" y="${top}" width="16" height="${plot}" fill="none" stroke="#333"/>`);
  const labels = [0, ...[1, 10, 100, 1000, 10000, 100000, 1000000, 10000000].filter((v) => v < max * 0.8), max];
  for (const v of labels) {
    const y = top + plot - scale(v) * plot;
    parts.push(`<line x1="${legendX + 16}" y1="${f(y)}" x2="${legendX + 21}" y2="${f(y)}" stroke="#333"/>`);
    parts.push(`<text x="${legendX + 24}" y="${f(y + 4)}">${fmtCount(v)}</text>`);
  }
  parts.push(`<text x="${legendX}" y="${top + plot + 18}">selections</text>`);
  parts.push(`<text x="${legendX}" y="${top + plot + 32}" fill="#444">(log scale)</text>`);
  parts.push('</svg>');
  return parts.join('\n') + '\n';
}

function fmtCount(v: number): string {
  if (v >= 1e6) return `${(v / 1e6).toFixed(v >= 1e7 ? 0 : 1)}M`;
  if (v >= 1e4) return `${(v / 1e3).toFixed(0)}k`;
  return String(v);
}
