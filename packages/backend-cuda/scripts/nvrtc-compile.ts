/**
 * Compiles every kernel with NVRTC (no GPU needed): `MOBA_NVRTC_LIB=… [ARCHS=sm_80,sm_90,sm_90a] [EXTRA=-DMOBA_NO_HALF]
 * node --conditions=@moba/source --import tsx packages/backend-cuda/scripts/nvrtc-compile.ts`. Exit 1 on any failure.
 * An `a` arch (sm_90a) compiles the sm90 path (`-DMOBA_SM90=1`, src/path.ts).
 */
import { compileOptions, kernelSource } from '../src/compile.js';
import { Nvrtc, cudaIncludeDir } from '../src/driver.js';
import { KERNEL_FILES } from '../src/kernels.js';

const nv = new Nvrtc();
console.log(`NVRTC ${nv.version()} (${nv.path})`);
let failed = 0;
for (const f of KERNEL_FILES) {
  for (const arch of (process.env.ARCHS ?? 'sm_90').split(',')) {
    const t0 = performance.now();
    try {
      const opts = [...compileOptions(arch, cudaIncludeDir(), arch.endsWith('a') ? ['-DMOBA_SM90=1'] : []), ...(process.env.EXTRA ? process.env.EXTRA.split(' ') : [])];
      const r = nv.compile(kernelSource(f), f, opts);
      console.log(`ok   ${f} ${arch}: ${r.cubin.length} B in ${Math.round(performance.now() - t0)} ms`);
    } catch (e) {
      failed++;
      console.log(`FAIL ${f} ${arch}: ${e instanceof Error ? e.message : String(e)}`);
    }
  }
}
process.exit(failed === 0 ? 0 : 1);
