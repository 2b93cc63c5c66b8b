/**
 * Now on the monotonic clock (ms), for durations and deadlines this process keeps to itself
 * (P293). A host clock stepped back (NTP correcting it) stopped working() for as long as the step,
 * so JetStream redelivered a message whose handler still ran; stepped forward, every publish
 * waiting for its ack timed out at once. Timestamps other processes read are clusterNow()'s (P241).
 */
export const monoNow = (): number => performance.now();
