import { readFileSync } from 'node:fs';
import { join } from 'node:path';

/** The eight CAP reference vectors (copied from the shared set per D42). */
export const VECTOR_NAMES = [
  'job_request',
  'job_result',
  'job_progress',
  'job_cancel',
  'heartbeat',
  'handshake',
  'alert',
  'alert_enhanced',
] as const;
export type VectorName = (typeof VECTOR_NAMES)[number];

export function readVector(name: VectorName): Uint8Array {
  return new Uint8Array(readFileSync(join(__dirname, 'fixtures', `buspacket_${name}.bin`)));
}

export function readPublicKeyPem(): string {
  return readFileSync(join(__dirname, 'fixtures', 'public_key.pem'), 'utf8');
}
