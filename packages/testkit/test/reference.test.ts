/**
 * The reference backend through the public vitest adapter, exactly as a third-party backend would call
 * it, plus the MOBA_REQUIRE name matching.
 */
import { describe, expect, it } from 'vitest';
import { createReferenceBackend } from '../src/reference-backend.js';
import { describeConformance, isRequired } from '../src/vitest.js';

describeConformance('reference', () => createReferenceBackend());


describe('MOBA_REQUIRE', () => {
  it('names backends by exact name or by a token of the suite name', () => {
    expect(isRequired('webgpu', 'webgpu,cuda')).toBe(true);
    expect(isRequired('backend-cuda', 'webgpu, cuda')).toBe(true);
    expect(isRequired('cpu', 'webgpu,cuda')).toBe(false);
    expect(isRequired('webgpu-lavapipe', 'cuda')).toBe(false);
    expect(isRequired('webgpu', '')).toBe(false);
  });
});
