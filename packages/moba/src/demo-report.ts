/** The human-readable report of `moba demo` (the `--json` output is the DemoReport itself). */
import type { DemoReport, ErrorSummary, PhaseName } from './demo.js';

const SHORT: Record<PhaseName, string> = {
  upload: 'upload', kconv: 'kconv', route: 'route', forward: 'forward',
  backward: 'backward', kconvBackward: 'kconv backward', download: 'download',
};

function fmtMs(ms: number): string {
  return ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : `${ms.toFixed(ms >= 100 ? 0 : 1)} ms`;
}

function fmtErr(e: ErrorSummary): string {
  return `max abs ${e.maxAbs.toExponential(2)}   rel RMS ${e.relRms.toExponential(2)}`;
}

/** The human-readable report. */
export function formatDemoReport(r: DemoReport): string {
  const { problem: p } = r;
  const L: string[] = [];
  const threads = r.backend.threads !== null ? ` (${r.backend.threads} thread${r.backend.threads === 1 ? '' : 's'})` : '';
  L.push('moba demo: MoBA forward + backward on random inputs');
  L.push(`  backend   ${r.backend.name}${threads}`);
  L.push(`  shapes    q [${p.T}, ${p.Hq}, ${p.D}], k/v [${p.T}, ${p.Hkv}, ${p.D}], ${p.dtype}; ` +
    (p.batch === 1 ? '1 sequence' : `${p.batch} sequences of ${p.seqlens.min === p.seqlens.max ? p.seqlens.min : `${p.seqlens.min}–${p.seqlens.max}`} tokens`));
  L.push(`  config    blockSize ${p.blockSize}, topk ${p.topk}, causal, ${p.kconvWidth > 0 ? `kconv${p.kconvWidth}` : 'no kconv'}, scale ${p.scale.toPrecision(4)}, seed ${p.seed}`);
  L.push(`  attended  ${(100 * r.attended.fraction).toFixed(2)}% of the causal query-key pairs (${r.attended.pairs.toExponential(3)} of ${r.attended.causalPairs.toExponential(3)})`);
  L.push('');
  L.push(`  phase             time      GFLOP    GFLOP/s${r.warmupTokens !== null ? `   (after a warm-up run at T = ${r.warmupTokens})` : ''}`);
  for (const ph of r.phases) {
    const gf = ph.flops !== null ? (ph.flops / 1e9).toFixed(3) : '–';
    const rate = ph.gflopsPerSec !== null ? ph.gflopsPerSec.toFixed(2) : '–';
    L.push(`  ${SHORT[ph.name].padEnd(16)}${fmtMs(ph.ms).padStart(9)}${gf.padStart(11)}${rate.padStart(11)}`);
  }
  L.push(`  ${'host, between'.padEnd(16)}${fmtMs(r.hostMs).padStart(9)}`);
  L.push(`  ${'wall'.padEnd(16)}${fmtMs(r.wallMs).padStart(9)}   (the rows above sum to it; every phase timed to device completion)`);
  L.push(`  ${'compute total'.padEnd(16)}${fmtMs(r.computeMs).padStart(9)}`);
  L.push('');
  const a = r.accuracy;
  L.push(`  accuracy vs the float64 reference on ${a.rows} random query rows × ${a.heads} heads (backend's routing, f64 kconv):`);
  L.push(`    out   ${fmtErr(a.out)}`);
  L.push(`    lse   ${fmtErr(a.lse)}`);
  L.push(`    dq    ${fmtErr(a.dq)}`);
  L.push(`    routing  ${a.routing.identical}/${a.routing.checked} (row, head) selections identical to the f64 router, ` +
    `${a.routing.valid}/${a.routing.checked} valid up to near-ties (eps ${a.routing.relEps.toExponential(0)} · |q|·|c|)`);
  L.push('');
  if (r.svg) L.push(`  routing heatmap written to ${r.svg}`);
  L.push(`  peak memory (RSS) ${r.peakRssMiB.toFixed(0)} MiB`);
  return L.join('\n') + '\n';
}
