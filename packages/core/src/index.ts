/** @moba/core: the contract, dtypes, validation, routing formats, planning, tolerance and orchestration. */
export * from './errors.js';
export * from './dtype.js';
export * from './tensor.js';
export * from './random.js';
export * from './config.js';
export * from './layout.js';
export * from './routing.js';
export * from './plan.js';
export * from './compare.js';
export * from './backend.js';
export * from './handles.js';
export * from './moba.js';
export * from './interop.js';
export * from './shell.js';
export * from './cache.js';
export * from './cache-shell.js';
