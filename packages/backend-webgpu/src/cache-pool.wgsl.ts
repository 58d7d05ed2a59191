/**
 * The page pool of the WebGPU KV cache split over several storage buffers (each within the device's binding
 * limit): page p lives in buffer floor(p / PPB) at page p mod PPB, PPB (pages per buffer) fixed when the cache is
 * created. A dispatch binds one group of at most MAX_POOL_BUFFERS consecutive buffers (as the storage bindings per
 * stage allow), the first one P.mode: a pool of more buffers takes one dispatch per group, each doing the pages
 * of its buffers. WGSL cannot index an array of bindings, so the shaders are specialised by the group's buffer
 * count n (bindings `<name>0 … <name>{n−1}`) and an accessor switches on the buffer index within the group, the
 * same for a whole page (a uniform branch). One buffer: no switch.
 */
import type { StorageKind } from './storage.wgsl.js';

/** Most buffers of a key pool (and of a value pool) one dispatch binds. */
export const MAX_POOL_BUFFERS = 8;

/**
 * The bindings of one pool (`first` … `first + n − 1`) and its accessors on (buffer b, element i of that buffer):
 * `<name>At(b, i)` decoded, `<name>At2(b, i)` elements i, i + 1 (i even for 16-bit storage: one word) and,
 * writable, `<name>Store2(b, i, a, c, two)` (i even for 16-bit storage).
 */
/**
 * WGSL expressions reading binding `<name><b>` directly (no accessor, no switch: for code generated once per
 * binding): `poolRead` element `i` decoded (f32), `poolRead2` elements i, i + 1 as vec2<f32> (i even for 16-bit
 * storage: one word). `i` is a WGSL expression, evaluated once per read (wrap it in a let when it has effects).
 */
export function poolRead(name: string, b: number, kind: StorageKind, i: string): string {
  if (kind === 'f32') return `${name}${b}[${i}]`;
  const dec = kind === 'f16' ? 'decodeF16' : 'decodeBf16';
  return `${dec}((${name}${b}[(${i}) >> 1u] >> (((${i}) & 1u) << 4u)) & 0xffffu)`;
}

/** See poolRead: a let-bound pair; `v` names the vec2<f32> result. */
export function poolRead2(name: string, b: number, kind: StorageKind, i: string, v: string): string {
  if (kind === 'f32') return `let ${v} = vec2<f32>(${name}${b}[${i}], ${name}${b}[(${i}) + 1u]);`;
  const dec = kind === 'f16' ? 'decodeF16' : 'decodeBf16';
  return `let ${v}w = ${name}${b}[(${i}) >> 1u]; let ${v} = vec2<f32>(${dec}(${v}w & 0xffffu), ${dec}(${v}w >> 16u));`;
}

export function poolBindings(name: string, first: number, n: number, kind: StorageKind, writable: boolean): string {
  const access = writable ? 'read_write' : 'read';
  const elem = kind === 'f32' ? 'f32' : 'u32';
  const decls = Array.from({ length: n }, (_, b) => `@group(0) @binding(${first + b}) var<storage, ${access}> ${name}${b}: array<${elem}>;`).join('\n');
  const [dec, enc] = kind === 'f16' ? ['decodeF16', 'encodeF16'] : ['decodeBf16', 'encodeBf16'];
  const read = (b: number): string => kind === 'f32' ? `return ${name}${b}[i];` : `return ${dec}((${name}${b}[i >> 1u] >> ((i & 1u) << 4u)) & 0xffffu);`;
  const read2 = (b: number): string => kind === 'f32'
    ? `return vec2<f32>(${name}${b}[i], ${name}${b}[i + 1u]);`
    : `let w = ${name}${b}[i >> 1u]; return vec2<f32>(${dec}(w & 0xffffu), ${dec}(w >> 16u));`;
  const store = (b: number): string => kind === 'f32'
    ? `${name}${b}[i] = a; if (two) { ${name}${b}[i + 1u] = c; }`
    : `${name}${b}[i >> 1u] = ${enc}(a) | select(0u, ${enc}(c) << 16u, two);`;
  const body = (stmt: (b: number) => string): string => n === 1 ? stmt(0) : `switch b {\n${Array.from({ length: n }, (_, b) => `    ${b === n - 1 ? 'default' : `case ${b}u`}: { ${stmt(b)} }`).join('\n')}\n  }`;
  return `${decls}
fn ${name}At(b: u32, i: u32) -> f32 {
  ${body(read)}
}
fn ${name}At2(b: u32, i: u32) -> vec2<f32> {
  ${body(read2)}
}
${writable ? `fn ${name}Store2(b: u32, i: u32, a: f32, c: f32, two: bool) {\n  ${body(store)}\n}` : ''}
`;
}

/**
 * The pool geometry functions over a table word `ppbWord` (pages per buffer), the page's elements and the group's
 * n buffers from P.mode: `poolBuf(page)` its buffer within the group, `inGroup(page)` whether the group holds it,
 * `poolBase(page)` its first element in its buffer.
 */
export function poolGeometry(ppbWord: string, pageElems: string, n: number): string {
  return `fn poolBuf(page: u32) -> u32 { return page / ${ppbWord} - P.mode; }
fn inGroup(page: u32) -> bool { return page / ${ppbWord} >= P.mode && poolBuf(page) < ${n}u; }
fn poolBase(page: u32) -> u32 { return (page % ${ppbWord}) * ${pageElems}; }
`;
}
