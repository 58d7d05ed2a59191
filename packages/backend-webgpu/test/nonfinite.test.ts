// Non-finite inputs (issue #11): the testkit's non-finite properties on the WebGPU backend (MOBA_REQUIRE=webgpu
// makes a missing adapter a failure).
import { describeConformance } from '@moba/testkit/vitest';
import { createWebGpuBackend } from '../src/index.js';

describeConformance('webgpu', () => createWebGpuBackend(), { only: ['non-finite'] });
