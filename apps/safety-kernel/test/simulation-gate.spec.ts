// P146: the simulation gate runs one simulation at a time, paces the next by the last one's run
// time, keeps at most 2 waiting and refuses the rest RESOURCE_EXHAUSTED. Latches, an injected
// clock; no timing is asserted beyond the order of events.
import { GrpcStatus } from '@cordum/protocol';
import { createSimulationGate } from '../src/grpc/simulation-gate';

function latch(): { promise: Promise<void>; open: () => void } {
  let open = (): void => undefined;
  const promise = new Promise<void>((resolve) => (open = resolve));
  return { promise, open };
}

it('runs one at a time in arrival order, keeps 2 waiting and refuses the next', async () => {
  let refused = 0;
  const gate = createSimulationGate({ onRefused: () => refused++, now: () => 0 });
  const started: number[] = [];
  const latches = [latch(), latch(), latch()];
  const runs = latches.map((l, i) =>
    gate.run(async () => {
      started.push(i);
      await l.promise;
      return i;
    }),
  );
  const fourth = gate.run(async () => 'never');
  await expect(fourth).rejects.toMatchObject({ code: GrpcStatus.RESOURCE_EXHAUSTED });
  expect(refused).toBe(1);
  await new Promise((r) => setImmediate(r));
  expect(started).toEqual([0]);
  latches[0]!.open();
  expect(await runs[0]).toBe(0);
  await new Promise((r) => setTimeout(r, 0));
  expect(started).toEqual([0, 1]);
  latches[1]!.open();
  await runs[1];
  latches[2]!.open();
  expect(await runs[2]).toBe(2);
  // A failing simulation frees the gate too.
  await expect(gate.run(async () => Promise.reject(new Error('bad candidate')))).rejects.toThrow('bad candidate');
  expect(await gate.run(async () => 'after')).toBe('after');
  expect(started).toEqual([0, 1, 2]);
});

it('starts the next simulation no sooner than the last one ran, after it ended', async () => {
  let clock = 0;
  const gate = createSimulationGate({ now: () => clock });
  await gate.run(async () => {
    clock += 50; // this one "ran" 50 ms
  });
  const at: number[] = [];
  const t0 = Date.now();
  await gate.run(async () => {
    at.push(Date.now() - t0);
  });
  // It waited the 50 ms the last one ran (timers may fire a little early on some platforms).
  expect(at[0]).toBeGreaterThanOrEqual(45);
});
