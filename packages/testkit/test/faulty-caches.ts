/**
 * The reference backend with one injected KV cache fault each, to prove the cache properties fail on them: the
 * kconv state dropped between appends, the open block's sum not carried across appends, a fork whose open page
 * is shared instead of copied, an append that writes sequence by sequence before the whole call is known to fit,
 * a new sequence that inherits a freed sequence's kconv state, and an attend that keeps topk − 1 blocks.
 */
import type { AppendPlan, AttendPlan, Backend, DeviceTensor, HostTensor, PageCopy } from '@moba/core';
import { hostTensor } from '@moba/core';
import { ReferenceCache } from '../src/reference-cache.js';
import { type ReferenceCacheFactory, createReferenceBackend } from '../src/reference-backend.js';

type Ctor = new (...args: ConstructorParameters<typeof ReferenceCache>) => ReferenceCache;

function backendWith(name: string, C: Ctor): Backend {
  const cache: ReferenceCacheFactory = (host, opts, w) => new C(host, opts, w);
  return createReferenceBackend({ name, cache });
}

/** (a) Every append starts from a zero kconv state: the taps before the chunk are lost. */
class DroppedKconvState extends ReferenceCache {
  protected override async doAppend(plan: AppendPlan, k: HostTensor, v: HostTensor): Promise<void> {
    this.state.fill(0);
    return super.doAppend(plan, k, v);
  }
}

/** (b) An append into an open block restarts the block's f32 sum: the tokens of earlier appends drop out of it. */
class OpenSumNotCarried extends ReferenceCache {
  protected override async doAppend(plan: AppendPlan, k: HostTensor, v: HostTensor): Promise<void> {
    for (const e of plan.entries) {
      if (e.pos0 % this.blockSize === 0) continue;
      const page = this.at(e.pages[Math.floor(e.pos0 / this.blockSize)]!);
      this.sums.fill(0, page * this.C, (page + 1) * this.C);
    }
    return super.doAppend(plan, k, v);
  }
}

/** (c) fork() maps the fork's open page onto the original's storage instead of copying it. */
class SharedOpenPage extends ReferenceCache {
  private readonly alias = new Map<number, number>();
  protected override at(page: number): number {
    return this.alias.get(page) ?? page;
  }
  protected override async doFork(src: number, dst: number, copy: PageCopy | null): Promise<void> {
    await super.doFork(src, dst, null);
    if (copy) this.alias.set(copy.dst, this.at(copy.src));
  }
}

/** (d) A multi-sequence append done one sequence at a time: the sequences before the one that does not fit are written. */
class WritesBeforeCapacityCheck extends ReferenceCache {
  override async append(seqs: readonly number[], k: DeviceTensor, v: DeviceTensor, cuSeqlens: Int32Array): Promise<void> {
    if (seqs.length < 2) return super.append(seqs, k, v, cuSeqlens);
    const [kh, vh] = [this.host.tensor('k', k), this.host.tensor('v', v)];
    for (let b = 0; b < seqs.length; b++) {
      const [r0, r1] = [cuSeqlens[b]!, cuSeqlens[b + 1]!];
      const part = (t: HostTensor): DeviceTensor => this.host.wrap(t.dtype, [r1 - r0, this.Hkv, this.D], hostTensor(t.dtype, [r1 - r0, this.Hkv, this.D], t.data.slice(r0 * this.C, r1 * this.C)));
      await super.append([seqs[b]!], part(kh), part(vh), Int32Array.of(0, r1 - r0));
    }
  }
}

/** (f) An attend whose router keeps one block fewer than topk (an off-by-one in the running top-k). */
class TopkOffByOne extends ReferenceCache {
  protected override async doAttend(plan: AttendPlan, q: HostTensor): Promise<{ out: HostTensor; lse: HostTensor }> {
    return super.doAttend({ ...plan, topk: Math.max(1, plan.topk - 1) }, q);
  }
}

/** (e) A new sequence keeps the kconv state its slot's freed sequence left behind. */
class StaleStateOnReuse extends ReferenceCache {
  protected override startSequence(): void {}
}

export const droppedKconvState = (): Backend => backendWith('reference-dropped-kconv-state', DroppedKconvState);
export const openSumNotCarried = (): Backend => backendWith('reference-open-sum-not-carried', OpenSumNotCarried);
export const sharedOpenPage = (): Backend => backendWith('reference-shared-open-page', SharedOpenPage);
export const writesBeforeCapacityCheck = (): Backend => backendWith('reference-writes-before-check', WritesBeforeCapacityCheck);
export const staleStateOnReuse = (): Backend => backendWith('reference-stale-state-on-reuse', StaleStateOnReuse);
export const topkOffByOne = (): Backend => backendWith('reference-topk-off-by-one', TopkOffByOne);
