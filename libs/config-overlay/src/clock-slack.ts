/**
 * How far apart replicas' clocks may be before an expiry written by one and read by another is
 * misjudged (P154, P195). Expiries that one replica writes in its own clock (a config report's
 * index score, a kernel's policy-file rule entry) are dropped by others only this long after
 * they passed, and read as live until then.
 */
export const CLOCK_SLACK_MS = 5 * 60_000;
