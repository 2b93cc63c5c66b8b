export { createLocks, defaultFenceKey, DEFAULT_LOCK_WAIT_HISTOGRAM, type AcquireOptions, type AcquireReadOptions, type LeaseWithRead, type Locks, type LocksOptions } from './locks';
export { Lease, type LeaseOptions } from './lease';
export { LockBusyError } from './errors';
export { createElector, type ElectorOptions, type LeaderElector, type LockLogger } from './elector';
export { FENCE_CHECK_LUA, FENCED_CODE, fencedSet, fencingCodes } from './fencing';
export { lockScripts } from './scripts';
