import type { ErrorEmitter } from 'ioredis/built/connectors/AbstractConnector';
import StandaloneConnector, { type StandaloneConnectionOptions } from 'ioredis/built/connectors/StandaloneConnector';
import type { NetStream } from 'ioredis/built/types';

/**
 * ioredis's own connector, whose socket keeps an `error` listener for its whole life. ioredis
 * listens for a socket's `error` with `once` (the connector's and the client's), so a socket
 * that errors a second time had no listener left, and Node turned that error into an uncaught
 * exception, which stops a service (service-kit's fatal handler). Seen in CI on a loaded machine
 * as "tlsv1 alert decode error" from a TLS cluster node while the client's connections were
 * failing and being dialled again. ioredis still handles the first error as before (it closes
 * the connection and reconnects); a later one on the same, already failed socket is dropped.
 */
export class GuardedConnector extends StandaloneConnector {
  // ioredis constructs a Connector with its whole options object (ConnectorConstructor: unknown)
  constructor(options: unknown) {
    super(options as StandaloneConnectionOptions);
  }

  override async connect(onError: ErrorEmitter): Promise<NetStream> {
    const stream = await super.connect(onError);
    stream.on('error', ignoreLaterError);
    return stream;
  }
}

function ignoreLaterError(): void {
  // the first error reached ioredis's own listeners; see GuardedConnector
}
