import { generateKeyPairSync, sign, verify } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  BusPacketSchema,
  JobRequestSchema,
  create,
  decodePacket,
  encodeLenField,
  encodePacket,
  loadSigningKey,
  loadSigningKeyFile,
  loadVerifyKeysFile,
  packetDecoder,
  packetEncoder,
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

  describe('map entries in UTF-8 key order, as the Go and Python CAP verifiers re-encode them', () => {
    // Built by hand: BusPacket{1 trace_id, 2 sender_id, 3 created_at{1 seconds, 2 nanos},
    // 4 protocol_version, 10 job_request{1 job_id, 2 topic, 15 labels}}, with the labels
    // entries in byte order: "-z" < "10" < "9" < "b" (a JS object lists "9", "10" first).
    const len = (tag: number, body: number[]): number[] => [tag, body.length, ...body];
    const str = (tag: number, s: string): number[] => len(tag, [...Buffer.from(s, 'utf8')]);
    const entry = (k: string, v: string): number[] => len(0x7a, [...str(0x0a, k), ...str(0x12, v)]);
    const SECONDS = 1_700_000_000; // varint 80 e2 cf aa 06
    const handBuilt = Buffer.from([
      ...str(0x0a, 'trace-1'),
      ...str(0x12, 'gateway-1'),
      ...len(0x1a, [0x08, 0x80, 0xe2, 0xcf, 0xaa, 0x06, 0x10, 0x05]),
      0x20, 0x01,
      ...len(0x52, [...str(0x0a, 'job-1'), ...str(0x12, 'job.echo'), ...entry('-z', 'w'), ...entry('10', 'x'), ...entry('9', 'y'), ...entry('b', 'v')]),
    ]);
    const packet = (labels: Record<string, string>): BusPacket => {
      const p = newPacket('gateway-1', { case: 'jobRequest', value: create(JobRequestSchema, { jobId: 'job-1', topic: 'job.echo', labels }) }, 'trace-1');
      p.createdAt = { $typeName: 'google.protobuf.Timestamp', seconds: BigInt(SECONDS), nanos: 5 };
      return p;
    };

    it('encodeForSigning of labels {"10", "9", "-z", "b"} is the hand-built encoding with entries -z, 10, 9, b', () => {
      const labels = { b: 'v', '10': 'x', '-z': 'w', '9': 'y' };
      expect(Object.keys(labels)).toEqual(['9', '10', 'b', '-z']);
      expect(Buffer.from(encodeForSigning(packet(labels)))).toEqual(handBuilt);
      expect(Buffer.from(encodePacket(packet(labels)))).toEqual(handBuilt);
    });

    it('a packet we sign verifies over its byte-order re-encoding (what a Go or Python worker checks), and with verifyPacket', () => {
      const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
      const signed = signPacket(packet({ '10': 'x', '9': 'y', b: 'v', '-z': 'w' }), privateKey);
      expect(verifyPacket(signed, publicKey)).toBe(true);
      const signature = decodePacket(signed).signature;
      expect(verify('sha256', handBuilt, { key: publicKey, dsaEncoding: 'der' }, signature)).toBe(true);
      expect(Buffer.from(signedBytes(signed))).toEqual(handBuilt);
    });

    it('a packet a CAP signer signed over the byte-order encoding re-encodes here to the same bytes, so re-encoding verifiers and re-signing agree', () => {
      const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
      const capSignature = sign('sha256', handBuilt, { key: privateKey, dsaEncoding: 'der' });
      const received = new Uint8Array([...handBuilt, ...encodeLenField(14, capSignature)]);
      expect(verifyPacket(received, publicKey)).toBe(true);
      const decoded = decodePacket(received);
      // Re-encoding the decoded packet (as a verifier that re-encodes does) gives the signed bytes back.
      const reencoded = encodeForSigning(decoded);
      expect(Buffer.from(reencoded)).toEqual(handBuilt);
      expect(verify('sha256', reencoded, { key: publicKey, dsaEncoding: 'der' }, decoded.signature)).toBe(true);
      // Forwarded with our own signature, the body is still the one they sign and check.
      expect(Buffer.from(signedBytes(signPacket(decoded, privateKey)))).toEqual(handBuilt);
    });
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

describe('packetDecoder / packetEncoder (P61: verification optional per deployment)', () => {
  const request = () => newPacket('scheduler-1', { case: 'jobRequest', value: create(JobRequestSchema, { jobId: 'j-1', topic: 'job.echo' }) });

  it('without a key: decode and validate only; with one: only packets signed by its key', () => {
    const { privatePem, publicPem } = keyPair();
    const other = keyPair();
    const unsigned = encodePacket(request());
    expect(packetDecoder()(unsigned).payload.case).toBe('jobRequest');
    const strict = packetDecoder(loadSigningKey(publicPem, 'public'));
    const refused = (bytes: Uint8Array) => {
      try {
        strict(bytes);
      } catch (err) {
        return isProtocolError(err, 'invalid_signature');
      }
      return false;
    };
    expect(refused(unsigned)).toBe(true);
    expect(refused(packetEncoder(loadSigningKey(other.privatePem, 'private'))(request()))).toBe(true);
    expect(strict(packetEncoder(loadSigningKey(privatePem, 'private'))(request())).payload.case).toBe('jobRequest');
    expect(packetEncoder()(request())).toEqual(expect.any(Uint8Array));
  });

  it('accepts the CAP reference vectors with their public key', () => {
    const strict = packetDecoder(loadSigningKey(readPublicKeyPem(), 'public'));
    expect(strict(readVector('job_result')).payload.case).toBe('jobResult');
    expect(strict(readVector('heartbeat')).payload.case).toBe('heartbeat');
  });

  it('loadSigningKeyFile: an unreadable file or a key of the wrong kind is invalid_key, one line', () => {
    const codeOf = (fn: () => unknown) => {
      try {
        fn();
      } catch (err) {
        return isProtocolError(err, 'invalid_key') ? (err as Error).message : `other: ${String(err)}`;
      }
      return 'no error';
    };
    expect(codeOf(() => loadSigningKeyFile('/nonexistent/cap.pem', 'public'))).toBe('cannot read "/nonexistent/cap.pem": ENOENT');
    expect(codeOf(() => loadSigningKey(keyPair().publicPem, 'private'))).toMatch(/^cannot parse private key/);
  });

  it('loadVerifyKeysFile: a file with the old and the new public key verifies packets signed with either, nothing else (P201)', () => {
    const [oldPair, newPair, stranger] = [keyPair(), keyPair(), keyPair()];
    const dir = mkdtempSync(join(tmpdir(), 'verify-keys-'));
    try {
      const both = join(dir, 'both.pem');
      writeFileSync(both, `${oldPair.publicPem}\n# the new pair, rolled out next\n${newPair.publicPem}`);
      const keys = loadVerifyKeysFile(both);
      expect(keys).toHaveLength(2);
      const strict = packetDecoder(keys);
      const signedWith = (pem: string) => packetEncoder(loadSigningKey(pem, 'private'))(request());
      expect(strict(signedWith(oldPair.privatePem)).payload.case).toBe('jobRequest');
      expect(strict(signedWith(newPair.privatePem)).payload.case).toBe('jobRequest');
      expect(() => strict(signedWith(stranger.privatePem))).toThrow(/signature does not verify/);
      expect(() => strict(encodePacket(request()))).toThrow(/unsigned/);
      expect(verifyPacket(signedWith(newPair.privatePem), keys)).toBe(true);
      // one key, as before; a file without a PEM block, or with a bad one, is invalid_key
      const one = join(dir, 'one.pem');
      writeFileSync(one, oldPair.publicPem);
      expect(loadVerifyKeysFile(one)).toHaveLength(1);
      const junk = join(dir, 'junk.pem');
      writeFileSync(junk, 'hello\n');
      expect(() => loadVerifyKeysFile(junk)).toThrow(/cannot parse public key/);
      const privateToo = join(dir, 'mixed.pem');
      writeFileSync(privateToo, `${oldPair.publicPem}${newPair.privatePem}`);
      expect(loadVerifyKeysFile(privateToo)).toHaveLength(2); // a private key's public half is a verify key too
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
