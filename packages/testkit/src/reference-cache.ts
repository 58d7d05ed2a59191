/**
 * The reference backend's KV cache (SPEC §9), the worked example of a `CacheShell` subclass: core's shell does
 * the validation, the page pool and the page tables; the stages below only store and compute. Pages are host
 * arrays: keys after kconv and values in the cache's dtype, one f32 running sum and one f32 centroid per page.
 * kconv runs on append with each sequence's last W − 1 raw keys; attend gathers the sequence's keys and values
 * from its pages and calls the float64 reference (route, then forward) with the query rows at the last `nq`
 * positions (SPEC §8). Simple loops, never optimised.
 */
import {
  type AppendPlan, type AttendPlan, type CacheContents, type CacheHost, type DType, type HostTensor, type PageCopy, type QKLayout,
  type ResolvedCacheOptions, CacheShell, dtypeBytes, fromFloat, hostTensor, toFloat64,
} from '@moba/core';
import { referenceForward, referenceRoute } from '@moba/core/reference';

type Storage = Float32Array | Uint16Array;

/** Bytes of one page: `blockSize` rows of keys and values in the dtype, plus its f32 sum and centroid. */
export function referencePageBytes(o: { Hkv: number; D: number; dtype: DType; blockSize: number }): number {
  const C = o.Hkv * o.D;
  return 2 * o.blockSize * C * dtypeBytes(o.dtype) + 2 * C * 4;
}

const sigmoid = (z: number): number => 1 / (1 + Math.exp(-z));

export class ReferenceCache extends CacheShell<HostTensor> {
  /** Channels of one token, Hkv·D. */
  protected readonly C: number;
  /** Keys after kconv and values of every page, `[pages, B, C]` in the dtype. */
  protected k: Storage;
  protected v: Storage;
  /** Each page's f32 key sum and (once full) f32 centroid, `[pages, C]`. */
  protected sums: Float32Array;
  protected centroids: Float32Array;
  /** Each slot's last W − 1 raw keys, oldest first, zero before the sequence start: `[maxSequences, W − 1, C]`. */
  protected state: Float32Array;
  /** kconv weight `[C, W]` (PyTorch layout, `weight[c, W−1−ℓ] = w_ℓ[c]`), or null. */
  protected readonly weight: Float64Array | null;

  constructor(host: CacheHost<HostTensor>, opts: ResolvedCacheOptions, weight: Float64Array | null) {
    super(host, opts);
    this.C = opts.Hkv * opts.D;
    const n = opts.pages * opts.blockSize * this.C;
    this.k = opts.dtype === 'f32' ? new Float32Array(n) : new Uint16Array(n);
    this.v = opts.dtype === 'f32' ? new Float32Array(n) : new Uint16Array(n);
    this.sums = new Float32Array(opts.pages * this.C);
    this.centroids = new Float32Array(opts.pages * this.C);
    this.state = new Float32Array(opts.maxSequences * Math.max(0, opts.W - 1) * this.C);
    this.weight = weight;
  }

  /** Where page `page`'s rows live in the storage (the identity; a faulty test cache overrides it). */
  protected at(page: number): number {
    return page;
  }

  /** Rows `[r0, r1)` of a page, decoded to f64. */
  protected rows(data: Storage, page: number, r0: number, r1: number): Float64Array {
    const o = (this.at(page) * this.blockSize + r0) * this.C;
    return toFloat64(hostTensor(this.dtype, [(r1 - r0) * this.C], data.subarray(o, o + (r1 - r0) * this.C)));
  }

  // ---------------------------------------------------------------- append

  /**
   * kconv of `count` new raw keys `[count, C]` of slot `slot` at position `pos0` (SPEC §6), exactly as `referenceKconv` computes it
   * (f64, the taps summed from ℓ = 0), with the slot's state as the taps before the chunk; updates the state.
   */
  protected convolve(slot: number, pos0: number, raw: Float64Array, count: number): Float64Array {
    const W = this.kconvWidth;
    if (W === 0 || this.weight === null) return raw;
    const C = this.C;
    const S = W - 1;
    const st = this.state.subarray(slot * S * C, (slot + 1) * S * C);
    if (pos0 === 0) this.startSequence(slot);
    const hist = new Float64Array((S + count) * C); // the state, then the new keys
    hist.set(st);
    hist.set(raw, S * C);
    const out = new Float64Array(count * C);
    for (let i = 0; i < count; i++) {
      for (let c = 0; c < C; c++) {
        let z = 0;
        for (let l = 0; l < W; l++) z += this.weight[c * W + (W - 1 - l)]! * hist[(S + i - l) * C + c]!;
        out[i * C + c] = raw[i * C + c]! + z * sigmoid(z);
      }
    }
    st.set(hist.subarray(count * C)); // the last W − 1 raw keys
    return out;
  }

  /** A new sequence's first append: its slot may hold a freed sequence's state; taps before the start are 0. */
  protected startSequence(slot: number): void {
    const S = (this.kconvWidth - 1) * this.C;
    this.state.fill(0, slot * S, (slot + 1) * S);
  }

  protected async doAppend(plan: AppendPlan, k: HostTensor, v: HostTensor): Promise<void> {
    const C = this.C;
    const B = this.blockSize;
    const k64 = toFloat64(k);
    for (const e of plan.entries) {
      const conv = this.convolve(e.slot, e.pos0, k64.subarray(e.row * C, (e.row + e.count) * C), e.count);
      const kEnc = fromFloat(conv, this.dtype, [e.count * C]).data; // rounded to the dtype like the kconv op
      const kDec = toFloat64(hostTensor(this.dtype, [e.count * C], kEnc));
      for (let i = 0; i < e.count; i++) {
        const pos = e.pos0 + i;
        const page = e.pages[Math.floor(pos / B)]!;
        const r = pos % B;
        const dst = (this.at(page) * B + r) * C;
        this.k.set(kEnc.subarray(i * C, (i + 1) * C), dst);
        this.v.set(v.data.subarray((e.row + i) * C, (e.row + i + 1) * C), dst);
        this.addToSum(page, r, kDec.subarray(i * C, (i + 1) * C));
      }
    }
  }

  /** Adds the key of row `r` to its page's f32 sum (a fresh page starts at 0); a full page gets its centroid. */
  protected addToSum(page: number, r: number, key: Float64Array): void {
    const C = this.C;
    const o = this.at(page) * C;
    for (let c = 0; c < C; c++) this.sums[o + c] = Math.fround((r === 0 ? 0 : this.sums[o + c]!) + key[c]!);
    if (r === this.blockSize - 1) {
      for (let c = 0; c < C; c++) this.centroids[o + c] = Math.fround(this.sums[o + c]! / this.blockSize);
    }
  }

  // ---------------------------------------------------------------- attend

  protected async doAttend(plan: AttendPlan, q: HostTensor): Promise<{ out: HostTensor; lse: HostTensor }> {
    const { Tq, Hq } = plan;
    const C = this.C;
    const Tk = plan.entries.reduce((a, e) => a + e.length, 0);
    const k = new Float64Array(Tk * C);
    const v = new Float64Array(Tk * C);
    const cuSeqlensQ = new Int32Array(plan.entries.length + 1);
    const cuSeqlensK = new Int32Array(plan.entries.length + 1);
    plan.entries.forEach((e, b) => {
      let row = cuSeqlensK[b]!;
      for (let j = 0; j * this.blockSize < e.length; j++) { // gather: the sequence's pages in block order
        const n = Math.min(this.blockSize, e.length - j * this.blockSize);
        k.set(this.rows(this.k, e.pages[j]!, 0, n), row * C);
        v.set(this.rows(this.v, e.pages[j]!, 0, n), row * C);
        row += n;
      }
      cuSeqlensK[b + 1] = row;
      cuSeqlensQ[b + 1] = e.qRow + e.nq; // query rows are the last nq positions (SPEC §8)
    });
    const layout: QKLayout = { cuSeqlensQ, cuSeqlensK };
    const shape = { T: Tq, Tk, Hq, Hkv: this.Hkv, D: this.D, dtype: this.dtype };
    const cfg = { blockSize: this.blockSize, topk: plan.topk, causal: plan.causal, scale: plan.scale };
    const q64 = toFloat64(q);
    const indices = referenceRoute(q64, k, shape, layout, cfg);
    const res = referenceForward(q64, k, v, indices, shape, layout, cfg);
    return { out: fromFloat(res.out, this.dtype, [Tq, Hq, this.D]), lse: fromFloat(res.lse, 'f32', [Tq, Hq]) };
  }

  // ---------------------------------------------------------------- fork, read, destroy

  protected async doFork(src: number, dst: number, copy: PageCopy | null): Promise<void> {
    const S = Math.max(0, this.kconvWidth - 1) * this.C;
    this.state.copyWithin(dst * S, src * S, (src + 1) * S);
    if (copy === null) return;
    const n = copy.tokens * this.C;
    const [from, to] = [this.at(copy.src) * this.blockSize * this.C, this.at(copy.dst) * this.blockSize * this.C];
    this.k.copyWithin(to, from, from + n);
    this.v.copyWithin(to, from, from + n);
    this.sums.copyWithin(this.at(copy.dst) * this.C, this.at(copy.src) * this.C, (this.at(copy.src) + 1) * this.C);
  }

  protected async doRead(slot: number, length: number, pages: Int32Array): Promise<CacheContents> {
    const { C, blockSize: B, Hkv, D } = this;
    const k = this.dtype === 'f32' ? new Float32Array(length * C) : new Uint16Array(length * C);
    const v = this.dtype === 'f32' ? new Float32Array(length * C) : new Uint16Array(length * C);
    for (let pos = 0; pos < length; pos++) {
      const o = (this.at(pages[Math.floor(pos / B)]!) * B + (pos % B)) * C;
      k.set(this.k.subarray(o, o + C), pos * C);
      v.set(this.v.subarray(o, o + C), pos * C);
    }
    const full = Math.floor(length / B);
    const centroids = new Float32Array(full * C);
    for (let j = 0; j < full; j++) centroids.set(this.centroids.subarray(this.at(pages[j]!) * C, (this.at(pages[j]!) + 1) * C), j * C);
    const openCount = length % B;
    const openSum = openCount === 0 ? new Float32Array(C) : this.sums.slice(this.at(pages[full]!) * C, (this.at(pages[full]!) + 1) * C);
    const S = Math.max(0, this.kconvWidth - 1);
    // an empty sequence's slot may still hold a freed sequence's state (reset on its first append): report zeros
    const state = length === 0 ? new Float32Array(S * C) : this.state.slice(slot * S * C, (slot + 1) * S * C);
    return {
      length,
      k: hostTensor(this.dtype, [length, Hkv, D], k),
      v: hostTensor(this.dtype, [length, Hkv, D], v),
      centroids: hostTensor('f32', [full, Hkv, D], centroids),
      openSum: hostTensor('f32', [Hkv, D], openSum),
      openCount,
      kconvState: hostTensor('f32', [S, Hkv, D], state),
      pages: pages.slice(),
    };
  }

  protected async doDestroy(): Promise<void> {
    this.k = new Float32Array(0);
    this.v = new Float32Array(0);
    this.sums = new Float32Array(0);
    this.centroids = new Float32Array(0);
    this.state = new Float32Array(0);
  }

  /** The kconv state of every slot (centroids and sums are counted in the pages). */
  protected metaBytes(): number {
    return this.state.byteLength;
  }
}
