/**
 * Backward properties (SPEC §5): dq, dk, dv (summed over each GQA group) match the f64 reference's
 * gradient within the tolerance policy (3× the calibrated error), under random valid routings and under
 * the backend's own routing; the backward is fed the backend's own forward `out` and `lse`.
 */
import type { Property } from '../types.js';
import { attentionProperty } from './forward.js';

export const backwardProperties: Property[] = [
  {
    group: 'backward',
    name: 'dq, dk, dv match the reference under random valid routings',
    run: (ctx) => attentionProperty(ctx, { own: false, backward: true }),
  },
  {
    group: 'backward',
    name: "dq, dk, dv match the reference under the backend's own routing",
    run: (ctx) => attentionProperty(ctx, { own: true, backward: true }),
  },
];
