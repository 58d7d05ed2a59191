/**
 * Handle bookkeeping shared by the backends: the opaque objects a backend gives out (device tensors,
 * routings) map to its own data; a disposed handle is refused with E_DEVICE and another backend's (or
 * anything else) with E_UNSUPPORTED. Handles are held weakly, so an unreachable handle's data can be
 * collected (and a backend's FinalizationRegistry on the handle still fires).
 */
import { MobaError } from './errors.js';

/** What the handles of a table are, for the messages: `tensor` ("upload it first") or `routing`. */
export type HandleKind = 'tensor' | 'routing';

export class HandleTable<V> {
  #values = new WeakMap<object, V>();
  readonly #freed: WeakSet<object>;

  /**
   * @param backend the backend's display name in messages (`'CPU'`, `'WebGPU'`, `'CUDA'`)
   * @param kind what the handles are
   * @param sibling another table whose disposed handles count as disposed here too (a backend's tensors
   *   and routings share one "freed" set, so a disposed routing passed as a tensor still reads "was disposed")
   */
  constructor(readonly backend: string, readonly kind: HandleKind = 'tensor', sibling?: HandleTable<unknown>) {
    this.#freed = sibling ? sibling.#freed : new WeakSet();
  }

  /** Registers a new handle. */
  add(handle: object, value: V): void {
    this.#values.set(handle, value);
  }

  /** The live value of `handle`, or undefined (never throws). */
  peek(handle: unknown): V | undefined {
    return isObject(handle) ? this.#values.get(handle) : undefined;
  }

  /** The value of `handle`; E_DEVICE when it was disposed, E_UNSUPPORTED when it is not one of this table's. */
  get(param: string, handle: unknown): V {
    const v = this.peek(handle);
    if (v !== undefined) return v;
    if (isObject(handle) && this.#freed.has(handle)) throw new MobaError('E_DEVICE', `${param} was disposed`, param);
    const owner = String(isObject(handle) ? (handle as { backend?: unknown }).backend : undefined);
    if (this.kind === 'routing') throw new MobaError('E_UNSUPPORTED', `${param} was not made by this ${this.backend} backend (backend: ${owner})`, param);
    throw new MobaError('E_UNSUPPORTED', `${param} is not a tensor of this ${this.backend} backend (backend: ${owner}): upload it first`, param);
  }

  /**
   * Forgets `handle` and returns its value the first time (the caller frees what it holds); undefined for a
   * handle already freed or not of this table, so dispose is idempotent. Later `get`s of it give E_DEVICE.
   */
  free(handle: unknown): V | undefined {
    const v = this.peek(handle);
    if (v === undefined) return undefined;
    this.#values.delete(handle as object);
    this.#freed.add(handle as object);
    return v;
  }

  /** Forgets every handle (on destroy), dropping the table's references to their values. */
  clear(): void {
    this.#values = new WeakMap();
  }
}

/**
 * E_RANGE unless a routing made for `store`'s query and key boundaries is used with the same layout (one
 * `cuSeqlens` is both); returns `store`.
 */
export function checkRoutingLayout<S extends { readonly cuSeqlensQ: Int32Array; readonly cuSeqlensK: Int32Array }>(store: S, cuSeqlensQ: Int32Array, cuSeqlensK: Int32Array): S {
  const same = (a: Int32Array, b: Int32Array) => a.length === b.length && a.every((x, i) => x === b[i]);
  if (!same(store.cuSeqlensQ, cuSeqlensQ) || !same(store.cuSeqlensK, cuSeqlensK)) {
    const fmt = (q: Int32Array, k: Int32Array) => (same(q, k) ? `cuSeqlens [${k.join(', ')}]` : `cuSeqlensQ [${q.join(', ')}], cuSeqlensK [${k.join(', ')}]`);
    throw new MobaError('E_RANGE', `routing was made for ${fmt(store.cuSeqlensQ, store.cuSeqlensK)}, not ${fmt(cuSeqlensQ, cuSeqlensK)}`, 'routing');
  }
  return store;
}

function isObject(x: unknown): x is object {
  return x !== null && typeof x === 'object';
}

interface LedgerEntry {
  readonly gen: number;
  readonly bytes: number;
  readonly routing: boolean;
}

/**
 * The shell's count of the bytes behind live handles (MemoryStats `liveBytes`, `liveTensors`, `liveRoutings`) and
 * the peak of the bytes in use. A handle leaves the count when it is freed or, never freed, garbage-collected;
 * `clear()` (destroy) forgets every handle at once.
 */
export class MemoryLedger {
  liveBytes = 0;
  liveTensors = 0;
  liveRoutings = 0;
  #peak = 0;
  #gen = 0;
  readonly #entries = new WeakMap<object, LedgerEntry>();
  readonly #gc = new FinalizationRegistry<LedgerEntry>((e) => this.#drop(e));

  /** Most bytes in use at once since creation or `resetPeak`. */
  get peakBytes(): number {
    return this.#peak;
  }

  /** Counts a new handle holding `bytes`. */
  add(handle: object, bytes: number, routing: boolean): void {
    const e: LedgerEntry = { gen: this.#gen, bytes, routing };
    this.#entries.set(handle, e);
    this.#gc.register(handle, e, handle);
    this.liveBytes += bytes;
    if (routing) this.liveRoutings++;
    else this.liveTensors++;
    this.note(this.liveBytes);
  }

  /** Stops counting a freed handle (idempotent). */
  remove(handle: object): void {
    const e = this.#entries.get(handle);
    if (!e) return;
    this.#entries.delete(handle);
    this.#gc.unregister(handle);
    this.#drop(e);
  }

  /** Raises the peak to `inUse` bytes if it is higher. */
  note(inUse: number): void {
    if (inUse > this.#peak) this.#peak = inUse;
  }

  /** The peak becomes `inUse` (default: the live bytes). */
  resetPeak(inUse = this.liveBytes): void {
    this.#peak = inUse;
  }

  /** Forgets every handle and the peak (destroy); handles collected later are ignored. */
  clear(): void {
    this.#gen++;
    this.liveBytes = this.liveTensors = this.liveRoutings = this.#peak = 0;
  }

  #drop(e: LedgerEntry): void {
    if (e.gen !== this.#gen) return;
    this.liveBytes -= e.bytes;
    if (e.routing) this.liveRoutings--;
    else this.liveTensors--;
  }
}
