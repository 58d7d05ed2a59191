/// <reference lib="dom" />
/** The decode plot: ms per step against context tokens, one polyline for MoBA and one for dense, axes and a legend. */
import type { DecodeState } from './decode.js';

export const DECODE_COLOURS = { moba: [214, 39, 40], dense: [31, 119, 180] } as const;
export const DECODE_PLOT = { left: 64, top: 56, right: 24, bottom: 56 } as const;

const css = (c: readonly number[]): string => `rgb(${c.join(',')})`;

function niceMax(x: number): number {
  if (!(x > 0)) return 1;
  const e = 10 ** Math.floor(Math.log10(x));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * e >= x) return m * e;
  return 10 * e;
}

export function drawDecodePlot(canvas: HTMLCanvasElement, st: DecodeState): void {
  const ctx = canvas.getContext('2d')!;
  const { width: W, height: H } = canvas;
  const { left, top, right, bottom } = DECODE_PLOT;
  const pw = W - left - right, ph = H - top - bottom;
  ctx.fillStyle = '#fff';
  ctx.fillRect(0, 0, W, H);
  ctx.fillStyle = '#111';
  ctx.font = '600 14px system-ui, sans-serif';
  ctx.fillText(`Decode step latency: prompt ${st.prompt}, block ${st.blockSize}, top-${st.topk}, on ${st.backend}`, left, 24);
  ctx.font = '12px system-ui, sans-serif';
  ctx.fillStyle = '#555';
  ctx.fillText(st.denseSkipped ?? 'dense: the same cache with every block selected', left, 42);
  const steps = st.steps;
  const x0 = steps.length ? steps[0]!.context : st.prompt, x1 = Math.max(steps.length ? steps[steps.length - 1]!.context : st.prompt + 1, x0 + 1);
  const yMax = niceMax(Math.max(...steps.map((s) => Math.max(s.ms, s.denseMs ?? 0)), 0) * 1.1);
  const X = (c: number): number => left + ((c - x0) / (x1 - x0)) * pw;
  const Y = (ms: number): number => top + ph - (ms / yMax) * ph;
  // axes, ticks, grid
  ctx.strokeStyle = '#ddd';
  ctx.fillStyle = '#333';
  ctx.lineWidth = 1;
  for (let i = 0; i <= 4; i++) {
    const y = Math.round(top + (ph * i) / 4) + 0.5;
    ctx.beginPath(); ctx.moveTo(left, y); ctx.lineTo(left + pw, y); ctx.stroke();
    const v = yMax * (1 - i / 4);
    ctx.textAlign = 'right';
    ctx.fillText(v.toFixed(yMax < 1 ? 2 : 1), left - 6, y + 4);
  }
  ctx.textAlign = 'center';
  const nx = Math.min(4, x1 - x0); // integer ticks only: no repeated labels on a short run
  for (let i = 0; i <= nx; i++) {
    const c = Math.round(x0 + ((x1 - x0) * i) / nx);
    ctx.fillText(String(c), X(c), top + ph + 16);
  }
  ctx.fillText('context tokens', left + pw / 2, top + ph + 36);
  ctx.save();
  ctx.translate(16, top + ph / 2);
  ctx.rotate(-Math.PI / 2);
  ctx.fillText('ms per step', 0, 0);
  ctx.restore();
  ctx.textAlign = 'left';
  ctx.strokeStyle = '#333';
  ctx.beginPath(); ctx.moveTo(left + 0.5, top); ctx.lineTo(left + 0.5, top + ph + 0.5); ctx.lineTo(left + pw, top + ph + 0.5); ctx.stroke();
  // lines
  const line = (pick: (s: (typeof steps)[number]) => number | null, colour: readonly number[]): void => {
    const pts = steps.flatMap((s) => { const v = pick(s); return v === null ? [] : [[X(s.context), Y(v)] as const]; });
    if (!pts.length) return;
    ctx.strokeStyle = ctx.fillStyle = css(colour);
    ctx.lineWidth = 2.5;
    ctx.beginPath();
    pts.forEach(([x, y], i) => (i ? ctx.lineTo(x, y) : ctx.moveTo(x, y)));
    ctx.stroke();
    for (const [x, y] of pts) ctx.fillRect(x - 2.5, y - 2.5, 5, 5);
  };
  line((s) => s.denseMs, DECODE_COLOURS.dense);
  line((s) => s.ms, DECODE_COLOURS.moba);
  // legend
  const entries: [string, readonly number[]][] = [['MoBA (mobaStep)', DECODE_COLOURS.moba]];
  if (!st.denseSkipped) entries.push(['dense (every block)', DECODE_COLOURS.dense]);
  entries.forEach(([label, c], i) => {
    const y = top + 12 + i * 18;
    ctx.fillStyle = css(c);
    ctx.fillRect(left + pw - 160, y - 6, 18, 6);
    ctx.fillStyle = '#111';
    ctx.fillText(label, left + pw - 136, y);
  });
}
