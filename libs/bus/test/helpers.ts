import { connectBus, subjects, type Bus, type BusLogger } from '../src';
import type { Registry } from 'prom-client';

export interface CapturingLogger extends BusLogger {
  lines: { level: string; msg: string; f?: object }[];
}

/** Keeps log lines for assertions; prints them only with CORDUM_TEST_VERBOSE. */
export function testLogger(): CapturingLogger {
  const lines: CapturingLogger['lines'] = [];
  const rec = (level: string) => (msg: string, f?: object) => {
    lines.push({ level, msg, ...(f ? { f } : {}) });
    if (process.env['CORDUM_TEST_VERBOSE']) process.stderr.write(`${level} ${msg} ${JSON.stringify(f ?? {})}\n`);
  };
  return { lines, debug: rec('debug'), info: rec('info'), warn: rec('warn'), error: rec('error') };
}

export async function bus(servers: string | string[], name: string, registry?: Registry): Promise<Bus> {
  return connectBus({ servers: Array.isArray(servers) ? servers : [servers], name, logger: testLogger(), ...(registry ? { registry } : {}) });
}

let n = 0;
/** A unique queue name per test so durables never collide. */
export function uniqueQueue(prefix = 'q'): string {
  n += 1;
  return `${prefix}-${process.pid}-${n}`;
}

export const enc = (s: string): Uint8Array => new TextEncoder().encode(s);
export const dec = (b: Uint8Array): string => new TextDecoder().decode(b);

/**
 * A JetStream publish and a core round trip on `b` (expects are jest's): the connection is logged
 * in, JetStream answers, and a core message comes back. For the login tests.
 */
export async function roundTrip(b: Bus, subject = 'auth.ping'): Promise<void> {
  await b.ensureStreams();
  await b.publish(subjects.submit, enc('x'));
  const got = new Promise<string>((resolve) => {
    const sub = b.subscribe(subject, (d) => {
      sub.unsubscribe();
      resolve(dec(d));
    });
  });
  await b.flush();
  b.publishCore(subject, enc('pong'));
  expect(await got).toBe('pong');
}
