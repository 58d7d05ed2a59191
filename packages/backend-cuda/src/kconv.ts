/**
 * Key convolution (kconv.cu): causal depthwise convolution of k within each sequence (kconv_forward) and
 * its gradient (kconv_dz, then dk via kconv_dk and the weight gradient via kconv_dw). The weight has k's
 * dtype (caps.kconvWeightDtype 'k').
 */
import { type CheckedKconv, type Layout, dtypeBytes } from '@moba/core';
import type { Buf } from './allocator.js';
import * as geo from './geometry.js';
import { DT } from './kernels.js';
import { i32, i64, ptr } from './params.js';
import type { Cuda } from './shared.js';

/** The sequence starts on the device and the sizes every kconv kernel takes. */
function sizes(c: Cuda, p: CheckedKconv, layout: Layout) {
  const cu = c.mem.small('cu', layout.cuSeqlens);
  return { cu: ptr(cu), nseq: i32(layout.cuSeqlens.length - 1), T_: i64(p.T), C: i32(p.C), W: i32(p.W), small: layout.cuSeqlens.byteLength };
}

export function kconv(c: Cuda, p: CheckedKconv, k: Buf, w: Buf, layout: Layout): Buf {
  const { small, ...s } = sizes(c, p, layout);
  const eb = dtypeBytes(p.dtype);
  c.mem.fits('kconv()', p.T * p.C * eb + small);
  const out = c.mem.alloc(p.T * p.C * eb);
  try {
    c.prog.launch('kconv.cu', `kconv_forward_${DT[p.dtype].suffix}`, geo.elementwiseLaunch('kconv_forward', p.T * p.C), { k: ptr(k.ptr), w: ptr(w.ptr), out: ptr(out.ptr), ...s });
    c.drv.synchronize();
  } catch (e) {
    c.mem.release(out);
    throw e;
  }
  return out;
}

export function kconvBackward(c: Cuda, p: CheckedKconv, k: Buf, w: Buf, dkOut: Buf, layout: Layout): { dk: Buf; dw: Buf } {
  const { small, ...s } = sizes(c, p, layout);
  const eb = dtypeBytes(p.dtype);
  c.mem.fits('kconvBackward()', p.T * p.C * (4 + eb) + p.C * p.W * eb + small);
  const dz = c.mem.slot('kconv_dz', p.T * p.C * 4);
  const dk = c.mem.alloc(p.T * p.C * eb);
  const dw = c.mem.alloc(p.C * p.W * eb);
  const sfx = DT[p.dtype].suffix;
  const n = p.T * p.C;
  try {
    c.prog.launch('kconv.cu', `kconv_dz_${sfx}`, geo.elementwiseLaunch('kconv_dz', n), { k: ptr(k.ptr), w: ptr(w.ptr), dkout: ptr(dkOut.ptr), dz: ptr(dz.ptr), ...s });
    c.prog.launch('kconv.cu', `kconv_dk_${sfx}`, geo.elementwiseLaunch('kconv_dk', n), { w: ptr(w.ptr), dkout: ptr(dkOut.ptr), dz: ptr(dz.ptr), dk: ptr(dk.ptr), ...s });
    c.prog.launch('kconv.cu', `kconv_dw_${sfx}`, geo.kconvDwLaunch(p.C), { k: ptr(k.ptr), dz: ptr(dz.ptr), dw: ptr(dw.ptr), ...s });
    c.drv.synchronize();
  } catch (e) {
    c.mem.release(dk);
    c.mem.release(dw);
    throw e;
  }
  return { dk, dw };
}
