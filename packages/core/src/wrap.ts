/**
 * Backends built around another: `wrapBackend` delegates the whole contract (instrumentation, the testkit's
 * deliberately faulty backends) and `timeBackend` times each op to its completion on the device.
 */
import type { Backend } from './backend.js';

/**
 * A backend that delegates every member of the contract to `inner`, except those in `over`: for
 * instrumentation (timing, event logs) and for deliberately faulty test backends.
 */
export function wrapBackend(inner: Backend, over: Partial<Backend> = {}): Backend {
  const b: Backend = {
    name: inner.name,
    caps: inner.caps,
    upload: (t) => inner.upload(t),
    download: (t) => inner.download(t),
    route: (q, k, l, c) => inner.route(q, k, l, c),
    routingFromIndices: (i, s, l, c) => inner.routingFromIndices(i, s, l, c),
    routingIndices: (r) => inner.routingIndices(r),
    forward: (q, k, v, r, l, c) => inner.forward(q, k, v, r, l, c),
    backward: (q, k, v, o, lse, g, r, l, c) => inner.backward(q, k, v, o, lse, g, r, l, c),
    kconv: (k, w, l) => inner.kconv(k, w, l),
    kconvBackward: (k, w, g, l) => inner.kconvBackward(k, w, g, l),
    sync: () => inner.sync(),
    dispose: (...items) => inner.dispose(...items),
    destroy: () => inner.destroy(),
    memoryStats: () => inner.memoryStats(),
    resetPeakMemory: () => inner.resetPeakMemory(),
    ...(typeof inner.createCache === 'function' ? { createCache: (o) => inner.createCache!(o) } : {}),
  };
  return { ...b, ...over };
}

/** The contract's data ops, as `timeBackend` names them. */
export type BackendOp = 'upload' | 'download' | 'route' | 'routingFromIndices' | 'routingIndices' | 'forward' | 'backward' | 'kconv' | 'kconvBackward';

export interface TimingHooks {
  /** Called before an op starts (after the device went idle). */
  start?(op: BackendOp): void;
  /** Called with the op's milliseconds, from an idle device to the op's completion on the device (also when it failed). */
  end(op: BackendOp, ms: number): void;
}

/**
 * A backend whose every data op is timed to device completion: `sync()` before the op starts (so earlier
 * work is not counted) and after it resolves (so queued work is), then `hooks.end(op, ms)`. Results are
 * exactly those of `inner`.
 */
export function timeBackend(inner: Backend, hooks: TimingHooks): Backend {
  const time = async <R>(op: BackendOp, f: () => Promise<R>): Promise<R> => {
    await inner.sync();
    hooks.start?.(op);
    const t0 = performance.now();
    try {
      const r = await f();
      await inner.sync();
      return r;
    } finally {
      hooks.end(op, performance.now() - t0);
    }
  };
  return wrapBackend(inner, {
    upload: (t) => time('upload', () => inner.upload(t)),
    download: (t) => time('download', () => inner.download(t)),
    route: (q, k, l, c) => time('route', () => inner.route(q, k, l, c)),
    routingFromIndices: (i, s, l, c) => time('routingFromIndices', () => inner.routingFromIndices(i, s, l, c)),
    routingIndices: (r) => time('routingIndices', () => inner.routingIndices(r)),
    forward: (q, k, v, r, l, c) => time('forward', () => inner.forward(q, k, v, r, l, c)),
    backward: (q, k, v, o, lse, g, r, l, c) => time('backward', () => inner.backward(q, k, v, o, lse, g, r, l, c)),
    kconv: (k, w, l) => time('kconv', () => inner.kconv(k, w, l)),
    kconvBackward: (k, w, g, l) => time('kconvBackward', () => inner.kconvBackward(k, w, g, l)),
  });
}
