import * as grpc from '@grpc/grpc-js';
import { create } from '@bufbuild/protobuf';
import {
  Health,
  HealthCheckResponseSchema,
  HealthCheckResponse_ServingStatus,
} from '../gen/grpc/health/v1/health_pb';
import { addGrpcService, clipText, grpcError } from './server';

export const ServingStatus = HealthCheckResponse_ServingStatus;
export type ServingStatus = HealthCheckResponse_ServingStatus;

/**
 * Current status of `service` ('' = the whole server). Return undefined for a
 * service this server does not know (Check answers NOT_FOUND as the gRPC
 * health spec requires; Watch streams SERVICE_UNKNOWN).
 */
export type HealthStatusSource = (service: string) => ServingStatus | undefined | Promise<ServingStatus | undefined>;

export interface HealthServiceOptions {
  /** How often an open Watch re-reads the status (default 1000 ms). */
  watchIntervalMs?: number;
}

/**
 * Serves grpc.health.v1.Health from `getStatus`. A request that does not decode is answered
 * INVALID_ARGUMENT (bad input, not grpc-js's INTERNAL). Watch is minimal: it sends
 * the current status, then polls and sends only changes until the client
 * cancels. Servers should stop with forceShutdown (or after clients cancel)
 * because an open Watch keeps tryShutdown waiting.
 */
export function addHealthService(server: grpc.Server, getStatus: HealthStatusSource, opts: HealthServiceOptions = {}): void {
  const intervalMs = opts.watchIntervalMs ?? 1_000;
  addGrpcService(server, Health, {
    async check(req) {
      const status = await getStatus(req.service);
      // The name comes from the caller (up to the server's message limit): only its start is echoed.
      if (status === undefined) throw grpcError(grpc.status.NOT_FOUND, `unknown service ${JSON.stringify(clipText(req.service, 128))}`);
      return { status };
    },
    watch(req, call) {
      let last: ServingStatus | undefined;
      let busy = false;
      let timer: NodeJS.Timeout | undefined;
      const stop = (): void => {
        if (timer) clearInterval(timer);
        timer = undefined;
      };
      const poll = async (): Promise<void> => {
        if (busy || call.cancelled) return;
        busy = true;
        try {
          const status = (await getStatus(req.service)) ?? ServingStatus.SERVICE_UNKNOWN;
          if (status !== last && !call.cancelled) {
            last = status;
            call.write(create(HealthCheckResponseSchema, { status }));
          }
        } catch {
          // A failing source reads as NOT_SERVING rather than killing the stream.
          if (last !== ServingStatus.NOT_SERVING && !call.cancelled) {
            last = ServingStatus.NOT_SERVING;
            call.write(create(HealthCheckResponseSchema, { status: last }));
          }
        } finally {
          busy = false;
        }
      };
      call.on('cancelled', stop);
      call.on('close', stop);
      call.on('error', stop);
      timer = setInterval(() => void poll(), intervalMs);
      timer.unref();
      void poll();
    },
  }, { undecodable: 'invalid_argument' });
}
