import { createServer } from 'node:net';

/**
 * Test ports come from below Linux's ephemeral range (32768–60999 by default). A port the
 * kernel hands out for `listen(0)` is an ephemeral one, and between the probe and the service's
 * own bind any outgoing connection on the machine (other tests' clients included) can take it
 * as its local port: the service then dies with EADDRINUSE. Ports below the range are never
 * used by outgoing connections, so only another listener can race us for them.
 */
const LOW = 20_000;
const HIGH = 32_000;

/** Ports this test process already handed out (the service may not have bound them yet). */
const handedOut = new Set<number>();

function canBind(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = createServer();
    srv.unref();
    srv.once('error', () => resolve(false));
    srv.listen(port, '127.0.0.1', () => srv.close(() => resolve(true)));
  });
}

/** A free TCP port on loopback, never one this process handed out before. */
export async function freePort(): Promise<number> {
  for (let i = 0; i < 200; i++) {
    const port = LOW + Math.floor(Math.random() * (HIGH - LOW));
    if (handedOut.has(port) || !(await canBind(port))) continue;
    handedOut.add(port);
    return port;
  }
  throw new Error(`freePort: no free port in ${LOW}–${HIGH} after 200 tries`);
}

/** Several distinct free ports (and their +10000 cluster-bus ports free too when asked). */
export async function freePorts(n: number): Promise<number[]> {
  const out = new Set<number>();
  while (out.size < n) out.add(await freePort());
  return [...out];
}
