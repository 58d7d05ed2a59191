import { describeConformance } from '@moba/testkit/vitest';
import { createCudaBackend, isAvailable } from '../src/index.js';

// Without a CUDA device (or libcuda / NVRTC) every property is a visible skip; MOBA_REQUIRE=cuda makes it a failure.
describeConformance('cuda', () => (isAvailable() ? createCudaBackend() : null));
