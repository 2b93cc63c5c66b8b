import { generateKeyPairSync, sign } from 'node:crypto';
import {
  BusPacketSchema,
  JobRequestSchema,
  create,
  decodePacket,
  encodeLenField,
  encodeForSigning,
  equals,
  isProtocolError,
  newPacket,
  signPacket,
  signedBytes,
  verifyPacket,
} from '../src';
import type { BusPacket } from '../src';
import { readPublicKeyPem, readVector } from './fixtures';

function keyPair(): { privatePem: string; publicPem: string } {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  return {
    privatePem: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
    publicPem: publicKey.export({ type: 'spki', format: 'pem' }).toString(),
  };
}

function samplePacket(labels: Record<string, string>): BusPacket {
  const p = newPacket(
    'gateway-1',
    { case: 'jobRequest', value: create(JobRequestSchema, { jobId: 'job-1', topic: 'job.echo', tenantId: 't1', labels, env: { b: '2', a: '1' } }) },
    'trace-1',
  );
  return p;
}

describe('signPacket / verifyPacket (D42)', () => {
  const { privatePem, publicPem } = keyPair();

  it('round-trips with a fresh P-256 key and the packet decodes back with its signature', () => {
    const p = samplePacket({ team: 'x', env: 'prod' });
    const bytes = signPacket(p, privatePem);
    expect(verifyPacket(bytes, publicPem)).toBe(true);
    const decoded = decodePacket(bytes);
    expect(decoded.signature.length).toBeGreaterThan(60);
    const unsigned = { ...decoded, signature: new Uint8Array(0) } as BusPacket;
    expect(equals(BusPacketSchema, unsigned, p)).toBe(true);
  });

  it('appends field 14 after the deterministic body', () => {
    const p = samplePacket({ a: '1' });
    const bytes = signPacket(p, privatePem);
    const body = encodeForSigning(p);
    expect(Buffer.from(bytes.subarray(0, body.length))).toEqual(Buffer.from(body));
    expect(bytes[body.length]).toBe(0x72); // tag: field 14, wire type 2
    expect(Buffer.from(signedBytes(bytes))).toEqual(Buffer.from(body));
  });

  it('is independent of map insertion order and of a stale signature on the input', () => {
    const a = samplePacket({ zeta: '1', alpha: '2', mid: '3' });
    const b = samplePacket({ mid: '3', alpha: '2', zeta: '1' });
    b.createdAt = a.createdAt;
    b.signature = new Uint8Array([1, 2, 3]);
    expect(Buffer.from(encodeForSigning(a))).toEqual(Buffer.from(encodeForSigning(b)));
    expect(verifyPacket(signPacket(b, privatePem), publicPem)).toBe(true);
  });

  it('verifies the received bytes, not a re-encoding (field 14 in the middle, fields out of order)', () => {
    // Reference vectors place field 14 before fields 15-17 (handshake); verification must still work
    // when the signature sits anywhere, so move it to the front of a signed packet.
    const bytes = signPacket(samplePacket({ k: 'v' }), privatePem);
    const body = signedBytes(bytes);
    const sigField = bytes.subarray(body.length);
    const moved = new Uint8Array(bytes.length);
    moved.set(sigField, 0);
    moved.set(body, sigField.length);
    expect(verifyPacket(moved, publicPem)).toBe(true);
  });

  it('hashes the received field order: a non-canonical body signed as received verifies, a reordered one does not', () => {
    const p = samplePacket({ k: 'v' });
    const body = encodeForSigning(p);
    expect(body[0]).toBe(0x0a); // field 1 (trace_id) comes first in the canonical encoding
    const traceLen = 2 + (body[1] as number);
    // Same fields, trace_id moved to the end: a valid encoding another SDK could emit.
    const reordered = new Uint8Array([...body.subarray(traceLen), ...body.subarray(0, traceLen)]);
    expect(decodePacket(reordered).traceId).toBe('trace-1');

    const withSig = (b: Uint8Array, sig: Uint8Array): Uint8Array => new Uint8Array([...b, ...encodeLenField(14, sig)]);
    const sigOverReordered = sign('sha256', reordered, { key: privatePem, dsaEncoding: 'der' });
    expect(verifyPacket(withSig(reordered, sigOverReordered), publicPem)).toBe(true);

    const canonicalSig = decodePacket(signPacket(p, privatePem)).signature;
    expect(verifyPacket(withSig(reordered, canonicalSig), publicPem)).toBe(false);
  });

  it('rejects a wrong key, tampering, unsigned and malformed packets', () => {
    const bytes = signPacket(samplePacket({}), privatePem);
    expect(verifyPacket(bytes, keyPair().publicPem)).toBe(false);
    expect(verifyPacket(bytes, readPublicKeyPem())).toBe(false);
    const tampered = Uint8Array.from(bytes);
    tampered[5] = (tampered[5] as number) ^ 0x20;
    expect(verifyPacket(tampered, publicPem)).toBe(false);
    expect(verifyPacket(signedBytes(bytes), publicPem)).toBe(false); // no field 14
    expect(verifyPacket(bytes.subarray(0, bytes.length - 3), publicPem)).toBe(false); // truncated signature
    expect(verifyPacket(new Uint8Array([0x0a, 0x05, 0x61]), publicPem)).toBe(false); // truncated field
  });

  it('a reference vector re-signed with our key verifies with our key only', () => {
    const p = decodePacket(readVector('job_request'));
    const bytes = signPacket(p, privatePem);
    expect(verifyPacket(bytes, publicPem)).toBe(true);
    expect(verifyPacket(bytes, readPublicKeyPem())).toBe(false);
  });

  it('accepts KeyObjects and refuses non-P-256 keys with code invalid_key', () => {
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
    const bytes = signPacket(samplePacket({}), privateKey);
    expect(verifyPacket(bytes, publicKey)).toBe(true);
    expect(verifyPacket(bytes, privateKey)).toBe(true); // public part derived

    const ed = generateKeyPairSync('ed25519');
    const p384 = generateKeyPairSync('ec', { namedCurve: 'secp384r1' });
    for (const bad of [ed.privateKey, p384.privateKey]) {
      expect(() => signPacket(samplePacket({}), bad)).toThrow(expect.objectContaining({ code: 'invalid_key' }));
    }
    expect(() => signPacket(samplePacket({}), publicPem)).toThrow();
    let caught: unknown;
    try {
      verifyPacket(bytes, 'not a pem');
    } catch (err) {
      caught = err;
    }
    expect(isProtocolError(caught, 'invalid_key')).toBe(true);
  });
});
