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

/** What addHealthService returns. */
export interface HealthService {
  /**
   * P232: for a server that is stopping. Every open Watch is sent NOT_SERVING (if it was told
   * anything else) and ended with OK, and a Watch opened after this gets NOT_SERVING and ends at
   * once: an open Watch held tryShutdown until its client cancelled (5 s, then the force).
   */
  endWatches(): void;
}

/**
 * Serves grpc.health.v1.Health from `getStatus`. A request that does not decode is answered
 * INVALID_ARGUMENT (bad input, not grpc-js's INTERNAL). Watch is minimal: it sends
 * the current status, then polls and sends only changes until the client
 * cancels, or until endWatches() ends it.
 */
export function addHealthService(server: grpc.Server, getStatus: HealthStatusSource, opts: HealthServiceOptions = {}): HealthService {
  const intervalMs = opts.watchIntervalMs ?? 1_000;
  const enders = new Set<() => void>();
  let ending = false;
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
      let ended = false;
      const stop = (): void => {
        if (timer) clearInterval(timer);
        timer = undefined;
        enders.delete(end);
      };
      const end = (): void => {
        stop();
        if (ended || call.cancelled) return;
        ended = true;
        if (last !== ServingStatus.NOT_SERVING) call.write(create(HealthCheckResponseSchema, { status: ServingStatus.NOT_SERVING }));
        last = ServingStatus.NOT_SERVING;
        call.end();
      };
      if (ending) {
        end();
        return;
      }
      enders.add(end);
      const poll = async (): Promise<void> => {
        if (busy || ended || call.cancelled) return;
        busy = true;
        try {
          const status = (await getStatus(req.service)) ?? ServingStatus.SERVICE_UNKNOWN;
          if (status !== last && !ended && !call.cancelled) {
            last = status;
            call.write(create(HealthCheckResponseSchema, { status }));
          }
        } catch {
          // A failing source reads as NOT_SERVING rather than killing the stream.
          if (last !== ServingStatus.NOT_SERVING && !ended && !call.cancelled) {
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
  return {
    endWatches() {
      ending = true;
      for (const end of [...enders]) end();
    },
  };
}
