import { describeConformance } from '@moba/testkit/vitest';
import { createWebGpuBackend } from '../src/index.js';

describeConformance('webgpu', () => createWebGpuBackend());
