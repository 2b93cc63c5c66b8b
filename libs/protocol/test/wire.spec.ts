import { encodeLenField, isProtocolError, stripTopLevelField } from '../src';

const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');
const bytes = (h: string): Uint8Array => new Uint8Array(Buffer.from(h.replace(/\s+/g, ''), 'hex'));

function expectMalformed(input: Uint8Array): void {
  let caught: unknown;
  try {
    stripTopLevelField(input, 14);
  } catch (err) {
    caught = err;
  }
  expect(isProtocolError(caught, 'malformed_wire')).toBe(true);
}

describe('stripTopLevelField', () => {
  // field 1 varint 150, field 2 fixed64, field 3 LEN "abc", field 4 fixed32
  const others = '08 9601' + ' 11 0102030405060708' + ' 1a 03 616263' + ' 25 01020304';

  it('removes field 14 between fields of every wire type and returns its value', () => {
    const input = bytes('08 9601' + ' 72 02 aabb' + ' 11 0102030405060708 1a 03 616263 25 01020304');
    const { rest, values } = stripTopLevelField(input, 14);
    expect(hex(rest)).toBe(hex(bytes(others)));
    expect(values.map(hex)).toEqual(['aabb']);
  });

  it('removes every occurrence (first, last) and keeps them in wire order', () => {
    const input = bytes('72 01 01' + others + '72 01 02');
    const { rest, values } = stripTopLevelField(input, 14);
    expect(hex(rest)).toBe(hex(bytes(others)));
    expect(values.map(hex)).toEqual(['01', '02']);
  });

  it('leaves input without field 14 untouched', () => {
    const input = bytes(others);
    const { rest, values } = stripTopLevelField(input, 14);
    expect(rest).toBe(input);
    expect(values).toEqual([]);
    expect(stripTopLevelField(new Uint8Array(0), 14).rest.length).toBe(0);
  });

  it('does not touch field 14 nested inside another message (e.g. JobRequest.principal_id)', () => {
    // field 10 (job_request) LEN containing field 14 "u"
    const nested = '52 03 72 01 75';
    const { rest, values } = stripTopLevelField(bytes(nested + '72 01 ff'), 14);
    expect(hex(rest)).toBe(hex(bytes(nested)));
    expect(values.map(hex)).toEqual(['ff']);
  });

  it('handles multi-byte tags and lengths', () => {
    const big = new Uint8Array(300).fill(7);
    const field14 = encodeLenField(14, big);
    expect(hex(field14.subarray(0, 3))).toBe('72ac02'); // 300 = 0xac 0x02
    const field2047 = bytes('f8 7f 01'); // field 2047 varint 1: two-byte tag
    const input = new Uint8Array([...field2047, ...field14, ...bytes(others)]);
    const { rest, values } = stripTopLevelField(input, 14);
    expect(hex(rest)).toBe(hex(field2047) + hex(bytes(others)));
    expect(values[0]?.length).toBe(300);
  });

  it.each([
    ['truncated varint', '08 96'],
    ['truncated fixed64', '11 01020304'],
    ['truncated fixed32', '25 0102'],
    ['length past the end', '1a 05 6162'],
    ['signature length past the end', '72 10 aabb'],
    ['field number 0', '00 01'],
    ['start group', '0b 08 01 0c'],
    ['end group', '0c'],
    ['wire type 6', '0e 00'],
    ['wire type 7', '0f 00'],
    ['field 14 as varint', '70 01'],
    ['field 14 as fixed32', '75 01020304'],
    ['11-byte varint', '08 ffffffffffffffffffff01'],
    ['varint overflowing 64 bits', '08 ffffffffffffffffff7f'],
    ['tag above uint32', '80808080 80 01 00'],
  ])('rejects %s', (_name, h) => {
    expectMalformed(bytes(h));
  });
});
