import { createPrivateKey, createPublicKey, sign, verify } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { KeyObject } from 'node:crypto';
import type { BusPacket } from './gen/cordum/agent/v1/buspacket_pb';
import { encodeForSigning, encodePacket } from './codec';
import { ProtocolError, isProtocolError } from './errors';
import { decodeValidPacket } from './validate';
import { encodeLenField, stripTopLevelField } from './wire';

/** BusPacket field number of `signature` (CONTRACT §3). */
export const SIGNATURE_FIELD = 14;

// PEM parsing costs far more than an ECDSA verify; services pass the same PEM
// string for every packet, so keep the parsed keys (a handful at most).
const keyCache = new Map<string, KeyObject>();
const KEY_CACHE_MAX = 16;

function toKey(key: string | KeyObject, kind: 'private' | 'public'): KeyObject {
  let obj: KeyObject;
  if (typeof key === 'string') {
    const cacheKey = `${kind}:${key}`;
    const cached = keyCache.get(cacheKey);
    if (cached) return cached;
    try {
      obj = kind === 'private' ? createPrivateKey(key) : createPublicKey(key);
    } catch (err) {
      throw new ProtocolError('invalid_key', `cannot parse ${kind} key: ${(err as Error).message}`, { cause: err });
    }
    if (keyCache.size >= KEY_CACHE_MAX) keyCache.clear();
    keyCache.set(cacheKey, obj);
  } else {
    obj = kind === 'public' && key.type === 'private' ? createPublicKey(key) : key;
  }
  const curve = obj.asymmetricKeyDetails?.namedCurve;
  if (obj.asymmetricKeyType !== 'ec' || curve !== 'prime256v1') {
    throw new ProtocolError('invalid_key', `expected an ECDSA P-256 ${kind} key, got ${obj.asymmetricKeyType ?? obj.type} ${curve ?? ''}`.trim());
  }
  if (kind === 'private' && obj.type !== 'private') throw new ProtocolError('invalid_key', 'signing needs a private key');
  return obj;
}

/**
 * D42: DER ECDSA P-256 over SHA-256 of the deterministic encoding without
 * field 14; the signature is then appended as field 14. Any signature already
 * on `p` is ignored.
 */
export function signPacket(p: BusPacket, privateKeyPem: string | KeyObject): Uint8Array {
  const body = encodeForSigning(p);
  const signature = sign('sha256', body, { key: toKey(privateKeyPem, 'private'), dsaEncoding: 'der' });
  const field = encodeLenField(SIGNATURE_FIELD, signature);
  const out = new Uint8Array(body.length + field.length);
  out.set(body, 0);
  out.set(field, body.length);
  return out;
}

/** One public key, or several (a key rotation: the old and the new pair, P201). */
export type VerifyKeys = string | KeyObject | readonly KeyObject[];

/**
 * Verifies the signature over the bytes as received with every top-level
 * field 14 removed (never a re-encoding: other encoders order fields
 * differently), with the key or with any of the keys. Unsigned or malformed
 * packets verify false; an unusable key throws ProtocolError('invalid_key').
 */
export function verifyPacket(bytes: Uint8Array, publicKeys: VerifyKeys): boolean {
  const keys = Array.isArray(publicKeys) ? (publicKeys as readonly KeyObject[]).map((k) => toKey(k, 'public')) : [toKey(publicKeys as string | KeyObject, 'public')];
  let stripped;
  try {
    stripped = stripTopLevelField(bytes, SIGNATURE_FIELD);
  } catch (err) {
    if (isProtocolError(err, 'malformed_wire')) return false;
    throw err;
  }
  // Protobuf semantics: the last occurrence of a singular field wins.
  const signature = stripped.values[stripped.values.length - 1];
  if (!signature || signature.length === 0) return false;
  return keys.some((key) => {
    try {
      return verify('sha256', stripped.rest, { key, dsaEncoding: 'der' }, signature);
    } catch {
      return false; // e.g. a signature that is not valid DER
    }
  });
}

/** The received bytes minus field 14, i.e. exactly what a signature covers. */
export function signedBytes(bytes: Uint8Array): Uint8Array {
  return stripTopLevelField(bytes, SIGNATURE_FIELD).rest;
}

/** Parses and checks a PEM key now (ProtocolError `invalid_key`), so a bad key fails at start, not on the first packet. */
export function loadSigningKey(pem: string, kind: 'private' | 'public'): KeyObject {
  return toKey(pem, kind);
}

/** A key file's text; an unreadable file is `invalid_key`, with a one-line message. */
function readKeyFile(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (err) {
    throw new ProtocolError('invalid_key', `cannot read ${JSON.stringify(path)}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, { cause: err });
  }
}

/** `loadSigningKey` of a PEM file; an unreadable file is `invalid_key` too, with a one-line message. */
export function loadSigningKeyFile(path: string, kind: 'private' | 'public'): KeyObject {
  return toKey(readKeyFile(path), kind);
}

const PEM_BLOCK = /-----BEGIN ([A-Z0-9 ]+)-----[\s\S]*?-----END \1-----/g;

/**
 * Every PEM public key in the file at `path`: one, or several during a key rotation (the old and
 * the new pair's, P201), each checked as `loadSigningKeyFile` checks one. A file without a PEM
 * block is parsed as one key, which gives its `invalid_key` error.
 */
export function loadVerifyKeysFile(path: string): KeyObject[] {
  const pem = readKeyFile(path);
  const blocks = pem.match(PEM_BLOCK) ?? [];
  return blocks.length === 0 ? [toKey(pem, 'public')] : blocks.map((b) => toKey(b, 'public'));
}

/**
 * CONTRACT §3: verifying is optional per deployment. Without `publicKey` this is
 * `decodeValidPacket`; with it, a packet must first carry a signature that verifies with the key
 * (or with one of the keys, P201; ProtocolError `invalid_signature`), so unsigned and forged
 * packets are refused like malformed ones.
 */
export function packetDecoder(publicKey?: KeyObject | readonly KeyObject[]): (bytes: Uint8Array) => BusPacket {
  if (publicKey === undefined) return decodeValidPacket;
  return (bytes) => {
    if (!verifyPacket(bytes, publicKey)) throw new ProtocolError('invalid_signature', 'packet is unsigned or its signature does not verify with the configured key');
    return decodeValidPacket(bytes);
  };
}

/** `encodePacket`, or with `privateKey` the signed encoding (D42) for receivers that verify. */
export function packetEncoder(privateKey?: KeyObject): (p: BusPacket) => Uint8Array {
  return privateKey === undefined ? encodePacket : (p) => signPacket(p, privateKey);
}
