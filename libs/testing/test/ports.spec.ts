import { freePort, freePorts } from '../src';
import { portRange } from '../src/ports';

describe('test ports', () => {
  it('gives jest workers 1–4 disjoint slices of 24000–32000, then goes around again', () => {
    const slices = ['1', '2', '3', '4'].map((id) => portRange(id));
    expect(slices).toEqual([
      { low: 24_000, high: 26_000 },
      { low: 26_000, high: 28_000 },
      { low: 28_000, high: 30_000 },
      { low: 30_000, high: 32_000 },
    ]);
    expect(portRange('5')).toEqual(slices[0]);
  });

  it('uses the whole range outside jest workers', () => {
    expect(portRange(undefined)).toEqual({ low: 24_000, high: 32_000 });
    expect(portRange('not-a-number')).toEqual({ low: 24_000, high: 32_000 });
  });

  it("hands out distinct ports inside this worker's slice", async () => {
    const { low, high } = portRange(process.env['JEST_WORKER_ID']);
    const ports = [...(await freePorts(20)), await freePort()];
    expect(new Set(ports).size).toBe(ports.length);
    for (const p of ports) {
      expect(p).toBeGreaterThanOrEqual(low);
      expect(p).toBeLessThan(high);
    }
  });
});
