// The gRPC edge holds what HTTP holds: a call without a valid key is refused from its
// metadata, before its message is read; a message that does not arrive in time ends the
// call; a message that does not decode is bad input (INVALID_ARGUMENT), not a server
// fault; a job reads the same over both; and every call is counted with a request id.
import { connect, type ClientHttp2Session, type ClientHttp2Stream } from 'node:http2';
import * as grpc from '@grpc/grpc-js';
import { jobKeys } from '@cordum/job-store';
import { CordumApi, GrpcStatus, grpcClientFor, type GrpcClient } from '@cordum/protocol';
import { waitFor } from '@cordum/testing';
import { KEYS, metric, rigClients, startRig, type Rig, type RigClients } from './harness';

const RECEIVE_TIMEOUT_MS = 500;
let rig: Rig;
let clients: RigClients;
let api: GrpcClient<(typeof CordumApi)['method']>;
let raw: grpc.Client;
let session: ClientHttp2Session;

beforeAll(async () => {
  rig = await startRig({}, { deps: { grpcReceiveTimeoutMs: RECEIVE_TIMEOUT_MS } });
  clients = await rigClients(rig, 'grpc-edge-spec');
  const addr = `127.0.0.1:${rig.gateway.grpcPort}`;
  api = grpcClientFor(CordumApi, addr, { defaultDeadlineMs: 10_000 });
  raw = new grpc.Client(addr, grpc.credentials.createInsecure());
  session = connect(`http://${addr}`);
  await new Promise<void>((resolve, reject) => {
    session.once('remoteSettings', () => resolve());
    session.once('error', reject);
  });
});

afterAll(async () => {
  api.close();
  raw.close();
  await new Promise<void>((resolve) => session.close(() => resolve()));
  await clients.close();
  await rig.stop();
});

interface RawOutcome {
  status?: string;
  errorCode?: string;
}

/** A SubmitJob call that announces a message of `announced` bytes and sends only `sent` of them, never ending. */
function partialCall(key: string | undefined, announced: number, sent: number): { outcome: RawOutcome; stream: ClientHttp2Stream } {
  const stream = session.request({
    ':method': 'POST',
    ':path': '/cordum.v1.CordumApi/SubmitJob',
    'content-type': 'application/grpc',
    te: 'trailers',
    ...(key ? { 'x-api-key': key } : {}),
  });
  const outcome: RawOutcome = {};
  const read = (h: Record<string, unknown>): void => {
    if (typeof h['grpc-status'] === 'string') outcome.status = h['grpc-status'];
    if (typeof h['cordum-error-code'] === 'string') outcome.errorCode = h['cordum-error-code'];
  };
  stream.on('response', read);
  stream.on('trailers', read);
  stream.on('error', () => undefined);
  stream.resume();
  const header = Buffer.alloc(5);
  header.writeUInt32BE(announced, 1);
  stream.write(Buffer.concat([header, Buffer.alloc(sent)]));
  return { outcome, stream };
}

/** A unary call with raw request bytes; resolves with the error's code and trailing metadata. */
function rawCall(path: string, bytes: Buffer, md: Record<string, string>): Promise<{ code: number; metadata: grpc.Metadata }> {
  const metadata = new grpc.Metadata();
  for (const [k, v] of Object.entries(md)) metadata.set(k, v);
  return new Promise((resolve) => {
    raw.makeUnaryRequest(
      path,
      (b: Buffer) => b,
      (b: Buffer) => b,
      bytes,
      metadata,
      { deadline: Date.now() + 5_000 },
      (err) => resolve(err ? { code: err.code, metadata: err.metadata } : { code: GrpcStatus.OK, metadata: new grpc.Metadata() }),
    );
  });
}

it('refuses calls without a valid key from their metadata, before their 2 MiB messages arrive, and allows 100 calls per connection', async () => {
  expect(session.remoteSettings.maxConcurrentStreams).toBe(100);
  const calls = [...Array.from({ length: 10 }, () => partialCall(undefined, 2 * 1024 * 1024 - 16, 64 * 1024)), ...Array.from({ length: 10 }, () => partialCall('wrong-key', 2 * 1024 * 1024 - 16, 64 * 1024))];
  // Read before the message, each is answered at once; read after it, none would be answered at all.
  await waitFor(() => calls.every((c) => c.outcome.status !== undefined), 5_000, { message: 'every call without a valid key answered' });
  expect(new Set(calls.map((c) => c.outcome.status))).toEqual(new Set([String(GrpcStatus.UNAUTHENTICATED)]));
  expect(new Set(calls.map((c) => c.outcome.errorCode))).toEqual(new Set(['unauthenticated']));
  for (const c of calls) c.stream.close();
  expect(await metric(rig.url, 'cordum_grpc_requests_total', 'method="SubmitJob",code="UNAUTHENTICATED"')).toBe(20);
});

it('ends a call whose message has not arrived in time with DEADLINE_EXCEEDED request_timeout', async () => {
  const started = Date.now();
  const { outcome, stream } = partialCall(KEYS.operator, 1024, 10);
  await waitFor(() => outcome.status !== undefined, 5_000, { message: 'slow call ended' });
  expect(outcome).toEqual({ status: String(GrpcStatus.DEADLINE_EXCEEDED), errorCode: 'request_timeout' });
  expect(Date.now() - started).toBeGreaterThanOrEqual(RECEIVE_TIMEOUT_MS - 50);
  stream.close();
  // the whole message, but the stream never ended: the request is not complete either
  const whole = partialCall(KEYS.operator, 10, 10);
  await waitFor(() => whole.outcome.status !== undefined, 5_000, { message: 'unended call ended' });
  expect(whole.outcome).toEqual({ status: String(GrpcStatus.DEADLINE_EXCEEDED), errorCode: 'request_timeout' });
  whole.stream.close();
  expect(await metric(rig.url, 'cordum_grpc_requests_total', 'method="SubmitJob",code="DEADLINE_EXCEEDED"')).toBe(2);
});

it('answers a message that does not decode INVALID_ARGUMENT bad_request, not INTERNAL, and echoes the caller\'s x-request-id', async () => {
  // field 1 (prompt) says 9 bytes follow, and 1 does
  const r = await rawCall('/cordum.v1.CordumApi/SubmitJob', Buffer.from([0x0a, 0x09, 0x61]), { 'x-api-key': KEYS.operator, 'x-request-id': 'req-grpc-1' });
  expect(r.code).toBe(GrpcStatus.INVALID_ARGUMENT);
  expect(r.metadata.get('cordum-error-code')).toEqual(['bad_request']);
  expect(r.metadata.get('x-request-id')).toEqual(['req-grpc-1']);
  const invalidUtf8 = await rawCall('/cordum.v1.CordumApi/GetJobStatus', Buffer.from([0x0a, 0x02, 0xff, 0xfe]), { 'x-api-key': KEYS.viewer });
  expect(invalidUtf8.code).toBe(GrpcStatus.INVALID_ARGUMENT);
  // a malformed x-request-id is replaced, as on HTTP
  const replaced = (await rawCall('/cordum.v1.CordumApi/GetJobStatus', Buffer.alloc(0), { 'x-api-key': KEYS.viewer, 'x-request-id': 'bad id' })).metadata.get('x-request-id');
  expect(replaced).toEqual([expect.stringMatching(/^[0-9a-f-]{36}$/)]);
  expect(await metric(rig.url, 'cordum_grpc_requests_total', 'method="SubmitJob",code="INVALID_ARGUMENT"')).toBe(1);
});

it('GetJobStatus shows no error on a SUCCEEDED job that kept an earlier attempt\'s, as HTTP does; a FAILED job shows its error', async () => {
  const md = { metadata: { 'x-api-key': KEYS.operator } };
  const ids = await Promise.all([api.submitJob({ prompt: 'a', topic: 'job.echo' }, md), api.submitJob({ prompt: 'b', topic: 'job.echo' }, md)]);
  const [ok, failed] = ids.map((r) => r.jobId) as [string, string];
  const lease = await clients.locks.acquire({ key: jobKeys.lock(ok), fenceKey: jobKeys.fence(ok), ttlMs: 10_000, owner: 'test', waitMs: 2_000 });
  if (!lease) throw new Error('lock');
  for (const state of ['SCHEDULED', 'DISPATCHED'] as const) expect((await clients.store.transition(ok, state, { token: lease.token })).ok).toBe(true);
  const retried = await clients.store.transition(ok, 'SUCCEEDED', { token: lease.token, patch: { error: { code: 'transient', message: 'attempt 1 failed' } } });
  expect(retried.ok).toBe(true);
  await lease.release();
  await clients.failJob(failed);

  const view = { metadata: { 'x-api-key': KEYS.viewer } };
  expect(await api.getJobStatus({ jobId: ok }, view)).toMatchObject({ state: 'SUCCEEDED', errorCode: '', errorMessage: '' });
  expect(await api.getJobStatus({ jobId: failed }, view)).toMatchObject({ state: 'FAILED', errorCode: 'worker_error', errorMessage: 'boom' });
  expect(await metric(rig.url, 'cordum_grpc_requests_total', 'method="GetJobStatus",code="OK"')).toBe(2);
  expect(await metric(rig.url, 'cordum_grpc_request_duration_seconds_count', 'method="SubmitJob"')).toBeGreaterThanOrEqual(24);
});
