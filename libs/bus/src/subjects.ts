/** Subject names and durable naming (CONTRACT §3, D10). */
export const STREAM_SYS = 'CORDUM_SYS';

export const subjects = {
  submit: 'sys.job.submit',
  result: 'sys.job.result',
  cancel: 'sys.job.cancel',
  dlq: 'sys.job.dlq',
  audit: 'sys.audit.export',
  state: 'sys.job.state',
  progress: 'sys.job.progress',
  heartbeat: 'sys.heartbeat',
  handshake: 'sys.handshake',
  configChanged: 'sys.config.changed',
  alert: 'sys.alert',
  workflowEvent: 'sys.workflow.event',
} as const;

/** The work subjects held by CORDUM_SYS (D10); everything else is core NATS. */
export const STREAM_SYS_SUBJECTS: readonly string[] = [subjects.submit, subjects.result, subjects.cancel, subjects.dlq, subjects.audit];

/** `dur_<queue>__<subject with . as _>`: one durable per queue group and subject, shared by every replica. */
export function durableName(queue: string, subject: string): string {
  return `dur_${queue}__${subject.replace(/\./g, '_')}`;
}
