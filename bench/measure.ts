/**
 * Timed runs for the benchmark: MoBA (route, forward, backward; each backend call timed on its own)
 * and the backend's dense causal baseline (`denseForward` / `denseBackward`, a tiled online-softmax
 * kernel on the same machinery). A repetition times every phase; medians are taken over repetitions.
 */
import { type Backend, type DeviceTensor, type HostTensor, type Layout, type MobaConfig, Rng, hostTensor } from 'moba-ts';

/** The dense causal baseline a backend may offer besides the Backend contract (the CPU backend does). */
export interface DenseBaseline {
  denseForward(q: DeviceTensor, k: DeviceTensor, v: DeviceTensor, layout: Layout, opts?: { scale?: number }): Promise<{ out: DeviceTensor; lse: DeviceTensor }>;
  denseBackward(
    q: DeviceTensor, k: DeviceTensor, v: DeviceTensor, out: DeviceTensor, lse: DeviceTensor, dOut: DeviceTensor,
    layout: Layout, opts?: { scale?: number },
  ): Promise<{ dq: DeviceTensor; dk: DeviceTensor; dv: DeviceTensor }>;
}

/** The backend's dense baseline, if it has one. */
export function denseOf(b: Backend): DenseBaseline | undefined {
  const d = b as Partial<DenseBaseline>;
  return typeof d.denseForward === 'function' && typeof d.denseBackward === 'function' ? (b as unknown as DenseBaseline) : undefined;
}

/** Device inputs of one benchmark problem. */
export interface BenchInputs {
  readonly q: DeviceTensor;
  readonly k: DeviceTensor;
  readonly v: DeviceTensor;
  readonly dOut: DeviceTensor;
  readonly layout: Layout;
}

/** Shapes of one problem (one sequence of T tokens). */
export interface BenchShape {
  readonly T: number;
  readonly Hq: number;
  readonly Hkv: number;
  readonly D: number;
  readonly dtype: 'f32' | 'f16' | 'bf16';
}

/** Seeded, approximately N(0, 1) inputs (`Rng.fastNormals`: billions of elements at 128K–512K) uploaded to `b`. */
export async function uploadInputs(b: Backend, s: BenchShape, seed: number): Promise<BenchInputs> {
  const rng = new Rng(seed);
  const make = (dims: number[]): HostTensor => {
    const x = rng.fastNormals(dims.reduce((a, c) => a * c, 1), s.dtype);
    return s.dtype === 'f32' ? hostTensor('f32', dims, x as Float32Array) : hostTensor(s.dtype, dims, x as Uint16Array);
  };
  return {
    q: await b.upload(make([s.T, s.Hq, s.D])), // [T, Hq, D]
    k: await b.upload(make([s.T, s.Hkv, s.D])), // [T, Hkv, D]
    v: await b.upload(make([s.T, s.Hkv, s.D])), // [T, Hkv, D]
    dOut: await b.upload(make([s.T, s.Hq, s.D])), // [T, Hq, D]
    layout: { cuSeqlens: Int32Array.of(0, s.T) },
  };
}

/** Times `f` from an idle device to the completion of its work on the device (`b.sync()` on both sides). */
async function timeIt<R>(b: Backend, f: () => Promise<R>): Promise<[R, number]> {
  await b.sync();
  const t0 = performance.now();
  const r = await f();
  await b.sync();
  return [r, performance.now() - t0];
}

/** Milliseconds of each MoBA phase in one repetition, and its memory peak. */
export interface MobaRep {
  readonly route: number;
  readonly forward: number;
  readonly backward: number;
  /**
   * `memoryStats().peakBytes` over the repetition (peak reset with the inputs uploaded, read before the outputs are
   * freed): inputs, routing, outputs, gradients and workspace; on the CPU an upper bound per call (core MemoryStats).
   */
  readonly peakBytes: number;
}

/** One MoBA repetition: route → forward → backward, each call timed; outputs freed. */
export async function mobaRep(b: Backend, x: BenchInputs, cfg: MobaConfig): Promise<MobaRep> {
  b.resetPeakMemory();
  const [routing, route] = await timeIt(b, () => b.route(x.q, x.k, x.layout, cfg));
  const [fwd, forward] = await timeIt(b, () => b.forward(x.q, x.k, x.v, routing, x.layout, cfg));
  const [g, backward] = await timeIt(b, () => b.backward(x.q, x.k, x.v, fwd.out, fwd.lse, x.dOut, routing, x.layout, cfg));
  const { peakBytes } = b.memoryStats();
  b.dispose(routing, fwd.out, fwd.lse, g.dq, g.dk, g.dv);
  return { route, forward, backward, peakBytes };
}

/** Milliseconds of the dense baseline's phases in one repetition. */
export interface DenseRep {
  readonly forward: number;
  readonly backward: number;
}

/** One dense repetition: forward → backward, each timed; outputs freed. */
export async function denseRep(b: Backend, d: DenseBaseline, x: BenchInputs): Promise<DenseRep> {
  const [fwd, forward] = await timeIt(b, () => d.denseForward(x.q, x.k, x.v, x.layout));
  const [g, backward] = await timeIt(b, () => d.denseBackward(x.q, x.k, x.v, fwd.out, fwd.lse, x.dOut, x.layout));
  b.dispose(fwd.out, fwd.lse, g.dq, g.dk, g.dv);
  return { forward, backward };
}

/** Median of the values (mean of the middle two for an even count). */
export function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}
