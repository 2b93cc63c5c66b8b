import { createServer } from 'node:net';

/**
 * Test ports come from below Linux's ephemeral range (32768–60999 by default). A port the
 * kernel hands out for `listen(0)` is an ephemeral one, and between the probe and the service's
 * own bind any outgoing connection on the machine (other tests' clients included) can take it
 * as its local port: the service then dies with EADDRINUSE. Ports below the range are never
 * used by outgoing connections, so only another listener can race us for them.
 *
 * The range starts at 24000 so that ports 10000–23999 stay free for whole stacks started with
 * fixed ports (`npm start --port-offset`, tools/e2e/test/npm-start.spec.ts). A Redis Cluster
 * node's bus port is set explicitly (`--cluster-port`), never port + 10000, which would land in
 * the ephemeral range.
 */
const LOW = 24_000;
const HIGH = 32_000;
/**
 * Jest runs test files in parallel worker processes, each probing on its own: two of them could
 * pick the same free port and both bind it, and one service died with EADDRINUSE (seen once in
 * a full run). Each worker takes its own slice of the range (JEST_WORKER_ID 1–4, then around
 * again), so two workers of a run with up to 4 never pick the same port.
 */
const SLICES = 4;

/** The [low, high) ports a process with this JEST_WORKER_ID hands out. */
export function portRange(workerId: string | undefined): { low: number; high: number } {
  const id = Number(workerId);
  if (!Number.isInteger(id) || id < 1) return { low: LOW, high: HIGH };
  const size = Math.floor((HIGH - LOW) / SLICES);
  const low = LOW + ((id - 1) % SLICES) * size;
  return { low, high: low + size };
}

/**
 * Ports this module instance handed out (the service may not have bound them yet). Jest gives
 * each test file its own module registry, so this covers one file; other files of the same
 * worker are kept apart by `canBind`, other workers by `portRange`.
 */
const handedOut = new Set<number>();

function canBind(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = createServer();
    srv.unref();
    srv.once('error', () => resolve(false));
    srv.listen(port, '127.0.0.1', () => srv.close(() => resolve(true)));
  });
}

/** A free TCP port on loopback in this worker's slice, never one this module handed out before. */
export async function freePort(): Promise<number> {
  const { low, high } = portRange(process.env['JEST_WORKER_ID']);
  for (let i = 0; i < 200; i++) {
    const port = low + Math.floor(Math.random() * (high - low));
    if (handedOut.has(port) || !(await canBind(port))) continue;
    handedOut.add(port);
    return port;
  }
  throw new Error(`freePort: no free port in ${low}–${high - 1} after 200 tries`);
}

/** Several distinct free ports (a Redis Cluster node's bus port is another `freePort`, never port + 10000). */
export async function freePorts(n: number): Promise<number[]> {
  const out = new Set<number>();
  while (out.size < n) out.add(await freePort());
  return [...out];
}
