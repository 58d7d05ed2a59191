/** The float64 reference: the executable form of SPEC.md. Simple loops, never optimised. */
export { referenceCentroids, referenceBlockScores, referenceRoute, routeFromCentroids } from './route.js';
export { referenceForward, attendedKeys, keysOf, type ReferenceForward, type Round } from './forward.js';
export { referenceBackward, type ReferenceBackward } from './backward.js';
export { referenceKconv, referenceKconvBackward } from './kconv.js';
export { validateQKLayout, isQKLayout, queryMap, type QKLayout, type ReferenceLayout, type QueryMap } from './qk.js';
