export { connectBus } from './bus';
export { STREAM_SYS, STREAM_SYS_SUBJECTS, subjects, durableName } from './subjects';
export { BusError, isBusError, type BusErrorCode } from './errors';
export { ERROR_BACKOFF_MS, HOLD_MAX_MS, MAX_DELIVER, errorBackoffMs } from './consumer';
export type { Bus, BusLogger, BusOptions, NatsConnectOptions, NatsTlsOptions, ConsumeOptions, Consumer, ConsumerBacklog, HandlerContext, HandlerOutcome, Subscription } from './types';
