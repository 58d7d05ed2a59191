/** Context parallelism (issue 15): shard layouts, the block-exchange plan, a CPU executor, a predictor. */
export { shardLayout, MAX_RANKS, type ShardLayout, type ShardMode } from './shard.js';
export { exchangePlan, type BlockRequest, type ExchangePlan, type ExchangeSizes, type RankExchange } from './exchange.js';
export { distForward, distBackward, type DistForward, type DistBackward, type DistState } from './execute.js';
export { predictContextParallel, type ContextParallelInput, type ContextParallelPrediction } from './predict.js';
