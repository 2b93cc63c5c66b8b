import { MaxRetriesPerRequestError } from 'ioredis/built/errors';
import { CordumError, createLogger, errorText } from '../src';

function capture(level?: 'debug' | 'info' | 'warn' | 'error') {
  const lines: string[] = [];
  const logger = createLogger({ service: 'scheduler', instance: 'scheduler-1', level, write: (l) => lines.push(l) });
  const records = () => lines.map((l) => JSON.parse(l) as Record<string, unknown>);
  return { logger, lines, records };
}

describe('logger', () => {
  it('writes one parseable JSON line per call with ts, level, service, instance, msg and fields', () => {
    const { logger, lines, records } = capture();
    logger.info('job dispatched', { jobId: 'j1', attempt: 2 });
    expect(lines).toHaveLength(1);
    expect(lines[0]!.endsWith('\n')).toBe(true);
    expect(lines[0]!.trimEnd()).not.toContain('\n');
    const [rec] = records();
    expect(rec).toMatchObject({ level: 'info', service: 'scheduler', instance: 'scheduler-1', msg: 'job dispatched', jobId: 'j1', attempt: 2 });
    expect(new Date(rec!['ts'] as string).toISOString()).toBe(rec!['ts']);
  });

  it('filters below the configured level', () => {
    const { logger, records } = capture('warn');
    logger.debug('d');
    logger.info('i');
    logger.warn('w');
    logger.error('e');
    expect(records().map((r) => r['level'])).toEqual(['warn', 'error']);
  });

  it('defaults to info', () => {
    const { logger, records } = capture();
    logger.debug('hidden');
    logger.info('shown');
    expect(records().map((r) => r['msg'])).toEqual(['shown']);
  });

  it('child() adds fields and keeps the level', () => {
    const { logger, records } = capture('info');
    const child = logger.child({ component: 'reconciler' }).child({ shard: 3 });
    child.debug('hidden');
    child.info('tick');
    expect(records()).toEqual([expect.objectContaining({ msg: 'tick', component: 'reconciler', shard: 3, service: 'scheduler' })]);
  });

  it('serialises errors as {message, code, stack} with their cause', () => {
    const { logger, records } = capture();
    const err = new CordumError('lock_busy', 'job locked', { cause: new Error('redis timeout') });
    logger.error('dispatch failed', { err });
    const e = records()[0]!['err'] as { message: string; code: string; stack: string; cause: { message: string } };
    expect(e.message).toBe('job locked');
    expect(e.code).toBe('lock_busy');
    expect(e.stack).toContain('CordumError');
    expect(e.cause.message).toBe('redis timeout');
  });

  it("names a Redis command dropped unsent as an outage, not as ioredis's maxRetriesPerRequest setting, without a stack", () => {
    const { logger, records } = capture();
    const err = new MaxRetriesPerRequestError(1);
    logger.warn('pending replayer turn failed', { err });
    expect(records()[0]!['err']).toEqual({ name: 'MaxRetriesPerRequestError', message: 'redis unavailable (command not sent: connection down)' });
    expect(errorText(err)).toBe('redis unavailable (command not sent: connection down)');
    expect(errorText(new Error('ECONNREFUSED'))).toBe('ECONNREFUSED');
  });

  it('survives circular fields', () => {
    const { logger, records } = capture();
    const a: Record<string, unknown> = {};
    a['self'] = a;
    logger.info('circular', { a });
    expect(records()[0]).toMatchObject({ msg: 'circular', fieldsError: 'unserializable fields' });
  });
});
