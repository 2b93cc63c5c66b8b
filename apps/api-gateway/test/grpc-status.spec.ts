// The gRPC status message built from an ApiError stays small enough to send (grpc/status.ts).
import { boundedStatusMessage, clipText } from '@cordum/protocol';
import { statusMessage, trailerValue } from '../src/grpc/status';

const encoded = (s: string): number => encodeURI(s).length;

it('names up to ten details, each part cut to 128 characters, and counts the rest', () => {
  expect(statusMessage('request validation failed', undefined)).toBe('request validation failed');
  expect(statusMessage('bad', [{ path: 'topic', message: 'must match' }])).toBe('bad (topic: must match)');
  const many = Array.from({ length: 400 }, (_, i) => ({ path: `labels.${'k'.repeat(300)}${i}`, message: 'm'.repeat(300) }));
  const text = statusMessage('request validation failed', many);
  const parts = text.slice('request validation failed ('.length, -1).split('; ');
  expect(parts).toHaveLength(11);
  expect(parts[0]).toBe(`labels.${'k'.repeat(121)}…: ${'m'.repeat(128)}…`);
  expect(parts[10]).toBe('…(+390 more)');
  expect(encoded(text)).toBeLessThanOrEqual(4096);
});

it('bounds the percent-encoded size, cutting at a code point, never inside a surrogate pair', () => {
  const emoji = statusMessage('x', Array.from({ length: 10 }, () => ({ path: '😀'.repeat(200), message: '中'.repeat(200) })));
  expect(encoded(emoji)).toBeLessThanOrEqual(4096);
  expect(emoji.endsWith('…')).toBe(true);
  expect(() => encodeURI(emoji)).not.toThrow();
  expect(clipText('😀😀😀', 2)).toBe('😀😀…');
  expect(boundedStatusMessage('😀'.repeat(1000), 33)).toBe('😀😀…'); // 12 bytes each, 9 for the ellipsis
  expect(boundedStatusMessage('😀'.repeat(1000), 32)).toBe('😀…');
  expect(boundedStatusMessage('short')).toBe('short');
});

it('replaces lone surrogates (encodeURI, grpc-js\'s encoding of grpc-message, throws on them)', () => {
  expect(statusMessage('a\ud800b', [{ path: '\udc00k', message: 'm' }])).toBe('a\ufffdb (\ufffdk: m)');
});

it('keeps cordum-* trailer values printable ASCII and short', () => {
  expect(trailerValue(1500)).toBe('1500');
  expect(trailerValue('job-é\n')).toBe('job-??');
  expect(trailerValue('x'.repeat(1000))).toHaveLength(256);
});
