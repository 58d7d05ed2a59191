/**
 * The conformance suite once more with smaller budgets than the device offers (the `tuning` option), so that
 * paths a large GPU never takes stay tested on any adapter: the 16 KiB tile set (fewer rows per dK/dV step,
 * P in phases, shorter staging steps) and partials split into several passes (whole heads per pass, or parts
 * of one head, merged per row across passes).
 */
import { describeConformance } from '@moba/testkit/vitest';
import { createWebGpuBackend } from '../src/index.js';

// 256 KiB of partials: one pass still fits a chunk of the largest head dim (256) the suite uses
describeConformance('webgpu (16 KiB workgroup memory, partials in passes)', () =>
  createWebGpuBackend({ tuning: { workgroupStorage: 16384, partialBytes: 256 * 1024 } }));
