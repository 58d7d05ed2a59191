import { MobaError } from '@moba/core';
import { describeConformance } from '@moba/testkit/vitest';
import { createCudaBackend, unavailableReason } from '../src/index.js';

// Without a CUDA device (or libcuda / NVRTC) every property is a visible skip naming why; MOBA_REQUIRE=cuda makes it a failure.
describeConformance('cuda', () => {
  const why = unavailableReason();
  if (why !== null) throw new MobaError('E_UNSUPPORTED', why);
  return createCudaBackend();
});
