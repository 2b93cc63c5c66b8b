import { randomUUID } from 'node:crypto';

const REQUEST_ID_RE = /^[A-Za-z0-9._:-]{1,128}$/;

/** The caller's request id when it is well formed, else a new UUID (HTTP's X-Request-ID, gRPC's x-request-id). */
export function requestIdOf(given: string | undefined): string {
  return given !== undefined && REQUEST_ID_RE.test(given) ? given : randomUUID();
}
