import { describeConformance } from '@moba/testkit/vitest';
import { createCpuBackend } from '../src/index.js';

describeConformance('cpu', () => createCpuBackend({ threads: 1 }));
describeConformance('cpu-workers', () => createCpuBackend({ threads: 2, minParallelWork: 0 }));
