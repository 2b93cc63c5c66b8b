// Bus broadcasts → WebSocket events (CONTRACT §2/§3, D15, D40). Decoding is
// fail-closed: an undecodable packet or one whose tenant cannot be learned is
// dropped (and counted by the hub), never sent to anybody.
import { JobStatus, decodePacket, timestampMs, type BusPacket, type SystemAlert } from '@cordum/protocol';
import { subjects } from '@cordum/bus';
import { STATE_BROADCAST_LOST } from '@cordum/job-store';

export type StreamEventType = 'job.state' | 'job.progress' | 'workflow.event' | 'alert';

export interface StreamEvent {
  type: StreamEventType;
  tenant: string;
  [field: string]: unknown;
}

/** An event before its tenant is known: either named in the packet, or to be looked up by job id. */
export interface PendingEvent {
  tenant?: string;
  jobId?: string;
  body: { type: StreamEventType; [field: string]: unknown };
}

/** P148: a replica's `state_broadcast_lost` alert: its state broadcasts since then may not have left. */
export interface LostBroadcasts {
  lostSince: number | undefined;
}

export const STREAM_SUBJECTS = [subjects.state, subjects.progress, subjects.alert, subjects.workflowEvent] as const;

const statusName = (s: JobStatus): string => JobStatus[s] ?? 'UNSPECIFIED';
const at = (p: BusPacket): string | null => (p.createdAt ? new Date(timestampMs(p.createdAt)).toISOString() : null);
const nonEmpty = (s: string | undefined): string | undefined => (s !== undefined && s !== '' ? s : undefined);

function alertBody(type: 'alert' | 'workflow.event', p: BusPacket, a: SystemAlert): PendingEvent {
  const d = a.details;
  return {
    tenant: nonEmpty(d['tenant_id']) ?? nonEmpty(d['tenant']),
    jobId: nonEmpty(d['job_id']),
    body: {
      type,
      level: a.level,
      message: a.message,
      component: a.component,
      code: a.code,
      severity: a.severity,
      details: d,
      trace_id: a.traceId || p.traceId,
      at: at(p),
    },
  };
}

export function decodeStreamPacket(subject: string, bytes: Uint8Array): PendingEvent | LostBroadcasts | null {
  const p = decodePacket(bytes);
  const pl = p.payload;
  if (subject === subjects.state || subject === subjects.progress) {
    if (pl.case !== 'jobProgress' || pl.value.jobId === '') return null;
    const v = pl.value;
    if (subject === subjects.state) {
      return { jobId: v.jobId, body: { type: 'job.state', job_id: v.jobId, state: v.message || statusName(v.status), trace_id: p.traceId, at: at(p) } };
    }
    return {
      jobId: v.jobId,
      body: {
        type: 'job.progress',
        job_id: v.jobId,
        step_id: v.stepId,
        percent: v.percent,
        message: v.message,
        status: statusName(v.status),
        result_ptr: v.resultPtr,
        dispatch_id: v.dispatch?.dispatchId ?? '',
        trace_id: p.traceId,
        at: at(p),
      },
    };
  }
  if (subject === subjects.alert || subject === subjects.workflowEvent) {
    if (pl.case === 'alert' && subject === subjects.alert && pl.value.code === STATE_BROADCAST_LOST) {
      const since = Date.parse(pl.value.details['since'] ?? '');
      return { lostSince: Number.isFinite(since) ? since : undefined };
    }
    if (pl.case === 'alert') return alertBody(subject === subjects.alert ? 'alert' : 'workflow.event', p, pl.value);
    if (pl.case === 'jobProgress' && subject === subjects.workflowEvent && pl.value.jobId !== '') {
      const v = pl.value;
      return { jobId: v.jobId, body: { type: 'workflow.event', job_id: v.jobId, step_id: v.stepId, message: v.message, status: statusName(v.status), trace_id: p.traceId, at: at(p) } };
    }
    return null;
  }
  return null;
}
