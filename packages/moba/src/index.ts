/**
 * moba-ts: Mixture of Block Attention for TypeScript. Re-exports the whole of `@moba/core` (tensors,
 * config, the Backend contract, `moba()` / `mobaBackward()`, `plan()`, errors) and adds backend
 * selection with lazy imports, so the GPU backends stay optional.
 */
export * from '@moba/core';
export {
  createBackend, listBackends, BACKEND_KINDS, type BackendKind, type ConcreteBackendKind, type BackendOptions, type AutoBackendOptions,
  type BackendStatus, type CpuBackend, type CpuBackendOptions, type WebGpuBackend, type WebGpuBackendOptions, type CudaBackend,
  type CudaBackendOptions, type BackendFor, type BackendOptionsFor,
} from './backends.js';
export { readTensor, parseTensor, tensorFileFormat, memorySource, TENSOR_FILE_FORMATS, type TensorFileSpec, type TensorFile, type TensorFileFormat, type FileDType, type ByteSource } from './io/index.js';
export { analyzeRouting, quantile, type AnalyzeInputs, type AnalyzeGrid, type AnalyzeOptions, type AnalyzeResult, type AnalyzeRow, type Quantiles, type DenseMethod } from './analyze.js';
export { runNeedle, predictHitRate, type NeedleOptions, type NeedleReport, type NeedleCell } from './needle.js';
