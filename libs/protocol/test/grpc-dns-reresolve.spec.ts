// A dns:/// client (Kubernetes' headless Service for the safety kernels) learns a replaced backend
// within seconds. grpc-js looks a name up again when a connection drops, but by default at most
// once in 30 s: in a rolling restart (surge 1) the first old kernel's stop came inside that window,
// so clients never learned the new pod, and when the second old kernel stopped they had no kernel
// at all until the window ended (jobs held, the breaker open, for up to ~25 s). channelOptions sets
// the minimum time between lookups to 1 s. The name is answered by a stubbed dns.promises.lookup
// (what grpc-js calls for A/AAAA); the two backends listen on 127.0.0.2 and 127.0.0.3, same port.
import { promises as dnsPromises, type LookupAddress } from 'node:dns';
import * as grpc from '@grpc/grpc-js';
import { Health, ServingStatus, addHealthService, grpcClientFor, grpcServerOptions } from '../src';

const NAME = 'kernels.reresolve.test';
const healthClient = (port: number) => grpcClientFor(Health, `dns:///${NAME}:${port}`);

function start(host: string, port: number, service: string): Promise<{ server: grpc.Server; port: number }> {
  const server = new grpc.Server(grpcServerOptions());
  addHealthService(server, (s) => (s === service ? ServingStatus.SERVING : undefined));
  return new Promise((resolve, reject) =>
    server.bindAsync(`${host}:${port}`, grpc.ServerCredentials.createInsecure(), (err, bound) => (err ? reject(err) : resolve({ server, port: bound }))),
  );
}

describe('a dns:/// gRPC client whose backend is replaced', () => {
  let answer = '127.0.0.2';
  const realLookup = dnsPromises.lookup.bind(dnsPromises);
  let lookup: jest.SpyInstance;
  let oldKernel: { server: grpc.Server; port: number };
  let newKernel: { server: grpc.Server; port: number };
  let client: ReturnType<typeof healthClient>;

  beforeAll(async () => {
    lookup = jest.spyOn(dnsPromises, 'lookup').mockImplementation(((hostname: string, options: unknown) =>
      hostname === NAME ? Promise.resolve([{ address: answer, family: 4 }] as LookupAddress[]) : realLookup(hostname, options as never)) as typeof dnsPromises.lookup);
    oldKernel = await start('127.0.0.2', 0, 'old');
    newKernel = await start('127.0.0.3', oldKernel.port, 'new');
    client = healthClient(oldKernel.port);
  });

  afterAll(() => {
    client.close();
    oldKernel.server.forceShutdown();
    newKernel.server.forceShutdown();
    lookup.mockRestore();
  });

  it('reaches the new backend within a few seconds of the old one going away, not after grpc-js\'s 30 s lookup interval', async () => {
    expect((await client.check({ service: 'old' }, { deadlineMs: 5_000, waitForReady: true })).status).toBe(ServingStatus.SERVING);
    // The Service now lists only the new pod, and the old one stops.
    answer = '127.0.0.3';
    oldKernel.server.forceShutdown();
    const stoppedAt = Date.now();
    let served = false;
    while (!served && Date.now() - stoppedAt < 10_000) {
      try {
        served = (await client.check({ service: 'new' }, { deadlineMs: 500, waitForReady: true })).status === ServingStatus.SERVING;
      } catch {
        // UNAVAILABLE or DEADLINE_EXCEEDED until the name is looked up again
      }
    }
    expect({ served, withinMs: 5_000 }).toEqual({ served: true, withinMs: 5_000 });
    expect(Date.now() - stoppedAt).toBeLessThan(5_000);
  }, 20_000);
});
