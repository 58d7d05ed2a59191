// Non-finite inputs (issue #11): the testkit's non-finite properties on the CPU backend, one and two threads.
import { describeConformance } from '@moba/testkit/vitest';
import { createCpuBackend } from '../src/index.js';

describeConformance('cpu', () => createCpuBackend({ threads: 1 }), { only: ['non-finite'] });
describeConformance('cpu-workers', () => createCpuBackend({ threads: 2, minParallelWork: 0 }), { only: ['non-finite'] });
