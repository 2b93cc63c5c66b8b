// Bounded gRPC status text. A validation error's details name the caller's own input (a label
// key is a detail's path), and grpc-js sends the status message percent-encoded in one
// `grpc-message` header. A header block Node cannot send (about 64 KiB once HPACK-encoded) is
// dropped without a RST_STREAM: the client never got a status, and the stream held one of the
// connection's 100 slots, and its request's memory, until the connection ended. Other clients
// refuse far less (gRPC C-core's default metadata limit is 8 KiB), so the message stays at 4 KiB
// (@cordum/protocol boundedStatusMessage, which every addGrpcService status goes through too).
import { boundedStatusMessage, clipText } from '@cordum/protocol';
import type { ErrorDetail } from '../http/errors';

/** Validation details named in a status message; the rest are counted ("…(+N more)"). */
export const MAX_STATUS_DETAILS = 10;
/** A detail's path and its message are each cut to this many characters. */
export const MAX_DETAIL_CHARS = 128;
/** The error's own message (a policy's reason, say) is cut to this many characters. */
export const MAX_MESSAGE_CHARS = 512;
/** A `cordum-*` trailer value (job id, trace id, retry delay) is cut to this many characters. */
export const MAX_TRAILER_CHARS = 256;

const ELLIPSIS = '…';

/**
 * "<message> (<path>: <message>; …)": the first MAX_STATUS_DETAILS details, each part cut to
 * MAX_DETAIL_CHARS, then "…(+N more)"; the whole within MAX_STATUS_MESSAGE_BYTES. HTTP's body
 * keeps every detail.
 */
export function statusMessage(message: string, details: readonly ErrorDetail[] | undefined): string {
  const head = clipText(message, MAX_MESSAGE_CHARS);
  if (!details || details.length === 0) return boundedStatusMessage(head);
  const shown = details.slice(0, MAX_STATUS_DETAILS).map((d) => `${clipText(d.path, MAX_DETAIL_CHARS)}: ${clipText(d.message, MAX_DETAIL_CHARS)}`);
  if (details.length > shown.length) shown.push(`${ELLIPSIS}(+${details.length - shown.length} more)`);
  return boundedStatusMessage(`${head} (${shown.join('; ')})`);
}

/** A value for a `cordum-*` trailer: printable ASCII (what grpc-js accepts in a text header), at most MAX_TRAILER_CHARS. */
export function trailerValue(v: unknown): string {
  const s = String(v).replace(/[^\x20-\x7e]/g, '?');
  return s.length > MAX_TRAILER_CHARS ? `${s.slice(0, MAX_TRAILER_CHARS - 3)}...` : s;
}
