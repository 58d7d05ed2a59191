/// <reference lib="dom" />
/**
 * The routing heatmap on a canvas (the ideas of `packages/moba/src/heatmap.ts`, which writes SVG for the CLI):
 * how often each key block is selected by the queries of each query block (sequence-local block numbers,
 * summed over heads and sequences), binned to at most `maxCells` per side, on a log colour scale so the
 * sparse past selections stay visible next to the always-selected diagonal.
 */
import type { RoutingCounts, Sequences } from '@moba/core';

/**
 * The fraction of causal (query, key) pairs the routing attends: for every row and head, the keys of its
 * selected blocks at or before the query, over the keys at or before it (1 = dense causal attention).
 */
export function attendedFraction(indices: Int32Array, Hq: number, topk: number, seqs: Sequences, blockSize: number): { pairs: number; causalPairs: number; fraction: number } {
  let pairs = 0;
  let causalPairs = 0;
  for (const s of seqs.seqs) {
    for (let t = s.start; t < s.start + s.len; t++) {
      const pos = t - s.start;
      causalPairs += Hq * (pos + 1);
      for (let i = 0; i < Hq * topk; i++) {
        const kb = indices[t * Hq * topk + i]!;
        if (kb < 0) continue;
        const first = kb * blockSize;
        const last = Math.min(s.len, first + blockSize) - 1;
        if (first <= pos) pairs += Math.min(last, pos) - first + 1;
      }
    }
  }
  return { pairs, causalPairs, fraction: causalPairs > 0 ? pairs / causalPairs : 0 };
}

// A perceptual sequential scale (dark blue → teal → yellow), interpolated between stops.
const STOPS: readonly [number, number, number][] = [
  [68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37],
];

export function color(x: number): string {
  const f = Math.min(1, Math.max(0, x)) * (STOPS.length - 1);
  const i = Math.min(STOPS.length - 2, Math.floor(f));
  const a = STOPS[i]!;
  const b = STOPS[i + 1]!;
  const u = f - i;
  const c = (k: 0 | 1 | 2): number => Math.round(a[k] + (b[k] - a[k]) * u);
  return `rgb(${c(0)}, ${c(1)}, ${c(2)})`;
}

function ticks(n: number): number[] {
  const raw = n / 6;
  const p = 10 ** Math.floor(Math.log10(Math.max(1, raw)));
  const step = [1, 2, 5, 10].map((m) => m * p).find((s) => s >= raw) ?? 10 * p;
  const out: number[] = [];
  for (let v = 0; v < n; v += step) out.push(v);
  return out;
}

function fmtCount(v: number): string {
  if (v >= 1e6) return `${(v / 1e6).toFixed(v >= 1e7 ? 0 : 1)}M`;
  if (v >= 1e4) return `${(v / 1e3).toFixed(0)}k`;
  return String(v);
}

/** Geometry of the plot inside the canvas (exported so tests can sample cells). */
export const PLOT = { left: 64, top: 56, size: 448 } as const;

/** Draws the heatmap onto `canvas` (cleared first). Returns the number of cells per side. */
export function drawHeatmap(canvas: HTMLCanvasElement, rc: RoutingCounts, opts: { title: string; subtitle?: string; maxCells?: number }): number {
  const ctx = canvas.getContext('2d');
  if (!ctx) throw new Error('no 2d canvas context');
  const { nb, counts } = rc;
  const bin = Math.max(1, Math.ceil(nb / (opts.maxCells ?? 128)));
  const cells = Math.ceil(nb / bin);
  const grid = new Float64Array(cells * cells);
  for (let qb = 0; qb < nb; qb++) {
    for (let kb = 0; kb < nb; kb++) grid[Math.floor(qb / bin) * cells + Math.floor(kb / bin)]! += counts[qb * nb + kb]!;
  }
  const max = grid.reduce((a, b) => Math.max(a, b), 0);
  const scale = (v: number): number => (max > 0 ? Math.log1p(v) / Math.log1p(max) : 0);
  const { left, top, size: plot } = PLOT;
  const cell = plot / cells;
  const legendX = left + plot + 24;

  ctx.fillStyle = '#ffffff';
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  ctx.fillStyle = '#111';
  ctx.font = 'bold 15px sans-serif';
  ctx.textBaseline = 'alphabetic';
  ctx.fillText(opts.title, left, 22);
  if (opts.subtitle) {
    ctx.font = '12px sans-serif';
    ctx.fillStyle = '#444';
    ctx.fillText(opts.subtitle, left, 40);
  }
  // cells: background = zero, then every non-zero cell
  ctx.fillStyle = color(0);
  ctx.fillRect(left, top, plot, plot);
  for (let r = 0; r < cells; r++) {
    for (let c = 0; c < cells; c++) {
      const v = grid[r * cells + c]!;
      if (v <= 0) continue;
      ctx.fillStyle = color(scale(v));
      const x0 = Math.round(left + c * cell);
      const y0 = Math.round(top + r * cell);
      ctx.fillRect(x0, y0, Math.round(left + (c + 1) * cell) - x0, Math.round(top + (r + 1) * cell) - y0);
    }
  }
  // axes
  ctx.strokeStyle = '#333';
  ctx.lineWidth = 1;
  ctx.strokeRect(left - 0.5, top - 0.5, plot + 1, plot + 1);
  ctx.fillStyle = '#111';
  ctx.font = '12px sans-serif';
  for (const tb of ticks(nb)) {
    const pos = (tb / nb) * plot;
    ctx.beginPath();
    ctx.moveTo(left + pos + 0.5, top + plot);
    ctx.lineTo(left + pos + 0.5, top + plot + 5);
    ctx.moveTo(left - 5, top + pos + 0.5);
    ctx.lineTo(left, top + pos + 0.5);
    ctx.stroke();
    ctx.textAlign = 'center';
    ctx.fillText(String(tb), left + pos, top + plot + 18);
    ctx.textAlign = 'right';
    ctx.fillText(String(tb), left - 8, top + pos + 4);
  }
  const binNote = bin > 1 ? ` (${bin} blocks per cell)` : '';
  ctx.textAlign = 'center';
  ctx.fillText(`key block${binNote}`, left + plot / 2, top + plot + 38);
  ctx.save();
  ctx.translate(left - 44, top + plot / 2);
  ctx.rotate(-Math.PI / 2);
  ctx.fillText(`query block${binNote}`, 0, 0);
  ctx.restore();
  // legend: log colour scale labelled in counts
  const steps = 64;
  for (let i = 0; i < steps; i++) {
    ctx.fillStyle = color(i / (steps - 1));
    const y0 = Math.round(top + plot - ((i + 1) * plot) / steps);
    ctx.fillRect(legendX, y0, 16, Math.round(top + plot - (i * plot) / steps) - y0);
  }
  ctx.strokeRect(legendX - 0.5, top - 0.5, 17, plot + 1);
  ctx.textAlign = 'left';
  ctx.fillStyle = '#111';
  const labels = [0, ...[1, 10, 100, 1000, 10000, 100000, 1000000].filter((v) => v < max * 0.8), max];
  for (const v of labels) {
    const y = top + plot - scale(v) * plot;
    ctx.beginPath();
    ctx.moveTo(legendX + 16, y);
    ctx.lineTo(legendX + 21, y);
    ctx.stroke();
    ctx.fillText(fmtCount(v), legendX + 24, y + 4);
  }
  ctx.fillText('selections', legendX - 4, top + plot + 18);
  ctx.fillStyle = '#444';
  ctx.fillText('(log scale)', legendX - 4, top + plot + 32);
  return cells;
}
