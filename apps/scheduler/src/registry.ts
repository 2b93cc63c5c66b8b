// Worker registry fed by `sys.heartbeat` / `sys.handshake` broadcasts. Every
// replica builds its own view (broadcasts are per-replica subscriptions), so it
// never needs Redis on the routing hot path.
import { WORKER_DRAINING_LABEL, type Handshake, type Heartbeat } from '@cordum/protocol';
import { clusterNow } from '@cordum/redis';

/** D44: only ids safe as one NATS subject token get direct dispatch. */
export const DIRECT_ID_RE = /^[A-Za-z0-9_-]{1,128}$/;

export function directSubject(workerId: string): string {
  return `worker.${workerId}.jobs`;
}

/** How long a worker's newest signed heartbeat time is kept after it arrived (P243). */
export const HEARTBEAT_SENT_KEEP_MS = 24 * 60 * 60 * 1000;

export interface WorkerView {
  workerId: string;
  pool: string;
  activeJobs: number;
  maxParallelJobs: number;
  cpuLoad: number;
  labels: Record<string, string>;
  capabilities: string[];
  /** epoch ms of the worker's real last heartbeat (D41: what the snapshot keeps). */
  lastHeartbeat: number;
  /**
   * Liveness clock: = lastHeartbeat for live heartbeats; for a worker hydrated from a snapshot,
   * max(last_heartbeat, now − 20 s) so it expires within the TTL unless it heartbeats (D41).
   */
  lastSeen?: number;
  /** From the handshake; [] until one arrives. */
  readyTopics: string[];
  /** Its last heartbeat said it is stopping (WORKER_DRAINING_LABEL): never routed to. */
  draining?: boolean;
  /** Handshake capability `start_ack` (D1). */
  startAck: boolean;
  /** D48: dispatches this replica sent since the worker's last heartbeat. */
  inFlight: number;
  /**
   * P224: jobs routed to this worker whose attempt is not published yet (the concurrency slot,
   * the DISPATCHED write and the publish are awaited between). Counted in its load from the
   * moment it is picked, so handlers running at once do not all take the same free slot; kept
   * across heartbeats, which cannot count them.
   */
  reserved?: number;
  /**
   * Results this replica applied since the last heartbeat beyond its own `inFlight`: jobs the
   * heartbeat's `activeJobs` counted that have ended since (P32).
   */
  settled: number;
  /**
   * P34: when this replica last replaced a dispatch to this worker that it never claimed (the
   * verifier's fallback or the reconciler's redispatch). Until the worker answers a dispatch or
   * one TTL has passed, routing skips it while any other candidate has room.
   */
  unclaimedAt?: number;
  /**
   * The worker had sent no heartbeat since that dispatch was sent: it was stopped (frozen, cut
   * off) rather than alive and missing dispatches, so its next heartbeat also ends the mark.
   */
  unclaimedSilent?: boolean;
}

/** A worker's slot taken by routing until the attempt is published or given up (P224). */
export interface Reservation {
  readonly workerId: string;
  /** The attempt went out: the slot is now an in-flight dispatch (noteDispatched). */
  commit(): void;
  /** The attempt did not go (overload elsewhere, a slot wait, a lost lease, an error). */
  release(): void;
}

/** P310: a forgotten worker's handshake, kept until `keptUntil`, as the snapshot carries it. */
export interface KeptHandshakeInfo {
  workerId: string;
  readyTopics: string[];
  startAck: boolean;
  keptUntil: number;
}

interface HandshakeInfo {
  readyTopics: string[];
  startAck: boolean;
  /** When it was received (or hydrated): a handshake whose worker never heartbeats is forgotten like a dead worker (P73). */
  at?: number;
  /**
   * P301: set when its worker was forgotten after 10 × TTL of silence: kept until then
   * (HEARTBEAT_SENT_KEEP_MS), so a worker that sends its handshake only at its start (a CAP node
   * agent) and comes back from a long silence (a host asleep, a partition) is routable again.
   */
  keptUntil?: number;
}

export class WorkerRegistry {
  private readonly workers = new Map<string, WorkerView>();
  private readonly handshakes = new Map<string, HandshakeInfo>();
  /**
   * P243: per worker, the signed creation time (the worker's clock) of its newest accepted
   * heartbeat and when that arrived. Kept a day, past the worker's own entry, so a capture of a
   * dead worker's last heartbeat published again is still recognised.
   */
  private readonly heartbeatSent = new Map<string, { sentAt: number; at: number }>();
  private heartbeatSentPruned = 0;
  private readonly ttlMs: number;
  private readonly now: () => number;

  constructor(opts: { ttlMs?: number; now?: () => number } = {}) {
    this.ttlMs = opts.ttlMs ?? 30_000;
    this.now = opts.now ?? clusterNow;
  }

  /**
   * `sentAt`: the packet's signed `created_at`, given when packets are verified (P243). A heartbeat
   * not newer than the last one accepted from its worker is a replay (or its clock went back) and
   * is ignored: it would keep a dead worker routable. Returns whether it was applied.
   */
  onHeartbeat(hb: Heartbeat, sentAt?: number): boolean {
    if (!hb.workerId) return false;
    if (sentAt !== undefined) {
      const last = this.heartbeatSent.get(hb.workerId);
      if (last && sentAt <= last.sentAt) return false;
      this.heartbeatSent.set(hb.workerId, { sentAt, at: this.now() });
    }
    const hs = this.handshakes.get(hb.workerId);
    if (hs) delete hs.keptUntil; // back: its handshake is its worker's again (P301)
    // A heartbeat proves the worker runs, not that dispatches reach it (P34): a mark stays, unless
    // it came while the worker was silent (unclaimedSilent true) and this heartbeat is it resuming.
    const prev = this.workers.get(hb.workerId);
    const marked = prev?.unclaimedSilent === false ? prev : undefined;
    this.workers.set(hb.workerId, {
      workerId: hb.workerId,
      pool: hb.pool,
      activeJobs: Math.max(0, hb.activeJobs),
      maxParallelJobs: Math.max(0, hb.maxParallelJobs),
      // A percentage: clamped, so a worker reporting -1e30 cannot win every routing decision (P73).
      cpuLoad: Number.isFinite(hb.cpuLoad) ? Math.min(100, Math.max(0, hb.cpuLoad)) : 0,
      labels: { ...hb.labels },
      capabilities: [...hb.capabilities],
      draining: hb.labels[WORKER_DRAINING_LABEL] === 'true',
      lastHeartbeat: this.now(),
      lastSeen: this.now(),
      readyTopics: hs?.readyTopics ?? [],
      startAck: hs?.startAck ?? false,
      // The heartbeat's active_jobs now includes what we sent before it (D48).
      inFlight: 0,
      settled: 0,
      ...(prev?.reserved ? { reserved: prev.reserved } : {}),
      unclaimedAt: marked?.unclaimedAt,
      unclaimedSilent: marked?.unclaimedSilent,
    });
    return true;
  }

  onHandshake(hs: Handshake): void {
    if (!hs.componentId) return;
    const info: HandshakeInfo = { readyTopics: [...hs.readyTopics], startAck: hs.capabilities['start_ack'] === true, at: this.now() };
    this.handshakes.set(hs.componentId, info);
    const w = this.workers.get(hs.componentId);
    if (w) {
      w.readyTopics = info.readyTopics;
      w.startAck = info.startAck;
    }
  }

  /**
   * P224: a slot of the worker taken for a job routed to it, before its attempt goes out. `commit`
   * once the attempt is published (the slot becomes one of our in-flight dispatches), `release`
   * when it does not go; only the first of the two counts.
   */
  reserve(workerId: string): Reservation {
    const w = this.workers.get(workerId);
    if (w) w.reserved = (w.reserved ?? 0) + 1;
    let open = w !== undefined;
    const settle = (): void => {
      // The view may have been replaced by a heartbeat since (it carries the count over).
      const cur = this.workers.get(workerId);
      if (open && cur && (cur.reserved ?? 0) > 0) cur.reserved = (cur.reserved ?? 0) - 1;
      open = false;
    };
    let done = false;
    return {
      workerId,
      commit: () => {
        if (done) return;
        done = true;
        settle();
        this.noteDispatched(workerId);
      },
      release: () => {
        if (done) return;
        done = true;
        settle();
      },
    };
  }

  noteDispatched(workerId: string): void {
    const w = this.workers.get(workerId);
    if (w) w.inFlight += 1;
  }

  /**
   * A result for a job we (or another replica) dispatched to this worker: its slot is
   * free again. Without this the in-flight count only resets on the next heartbeat, so a
   * burst larger than max_parallel_jobs within one heartbeat interval reads as overload
   * and submits are NAKed until their deliveries run out. Once our own in-flight count is
   * used up, the result is of a job the last heartbeat counted (P32): without that, a worker
   * whose heartbeat caught a burst looked that busy, up to overloaded, for a whole heartbeat
   * interval after the burst had ended. A `refused` result (worker_busy) ended no running job:
   * it frees only our own in-flight slot.
   */
  noteFinished(workerId: string | undefined, refused = false): void {
    const w = workerId ? this.workers.get(workerId) : undefined;
    if (!w) return;
    w.unclaimedAt = w.unclaimedSilent = undefined;
    if (w.inFlight > 0) w.inFlight -= 1;
    else if (!refused && w.settled < w.activeJobs) w.settled += 1;
  }

  /**
   * P34: a dispatch to this worker, sent at `dispatchedAt`, went unclaimed and was replaced.
   * Returns whether the worker was not marked already (so the caller logs the change once).
   */
  noteUnclaimed(workerId: string | undefined, dispatchedAt: number): boolean {
    const w = workerId ? this.workers.get(workerId) : undefined;
    if (!w) return false;
    const fresh = !this.unresponsive(w);
    w.unclaimedAt = this.now();
    w.unclaimedSilent = w.lastHeartbeat < dispatchedAt;
    return fresh;
  }

  /** The worker answered a dispatch (its start ack or progress, or a result): dispatches reach it. */
  noteAnswered(workerId: string | undefined): void {
    const w = workerId ? this.workers.get(workerId) : undefined;
    if (w) w.unclaimedAt = w.unclaimedSilent = undefined;
  }

  /** P34: a dispatch to it went unclaimed less than one TTL ago and it has answered none since. */
  unresponsive(w: WorkerView): boolean {
    return w.unclaimedAt !== undefined && this.now() - w.unclaimedAt < this.ttlMs;
  }

  get(workerId: string): WorkerView | undefined {
    return this.workers.get(workerId);
  }

  isOnline(w: WorkerView): boolean {
    return this.now() - (w.lastSeen ?? w.lastHeartbeat) < this.ttlMs;
  }

  /** When this replica's bus went away (busLost), while it is away. */
  private busDownAt: number | undefined;

  /** P339: this replica's bus went away; no heartbeat reaches it until busBack. */
  busLost(): void {
    this.busDownAt ??= this.now();
  }

  /**
   * P339: the bus is back. The outage was this replica's, not its workers': a worker that was live
   * when the bus went away gets the outage's length back on its liveness clock, so it is not taken
   * for gone in the seconds before its next heartbeat arrives. After an outage longer than the
   * worker TTL every worker looked gone: the leaders and the intake parked retries and the submit
   * backlog as waiting for a worker (Checks and tries counted), and failed `no_workers` a job whose
   * no-worker bound had passed meanwhile, though a worker served its topic. A worker that died in
   * the outage is routed to until its remaining TTL runs out, as after a warm start (D1 b catches it).
   */
  busBack(): void {
    const down = this.busDownAt;
    this.busDownAt = undefined;
    if (down === undefined) return;
    const away = this.now() - down;
    if (away <= 0) return;
    for (const w of this.workers.values()) {
      const seen = w.lastSeen ?? w.lastHeartbeat;
      if (down - seen < this.ttlMs) w.lastSeen = seen + away;
    }
  }

  /**
   * Warm start (BEHAVIOURS §4, D41): adds snapshot workers with a bounded liveness clock. A worker
   * this replica already heard from live keeps its live data (live heartbeats override).
   */
  hydrate(workers: Omit<WorkerView, 'inFlight' | 'lastSeen' | 'settled'>[], floorMs: number): number {
    const now = this.now();
    let added = 0;
    for (const w of workers) {
      const cur = this.workers.get(w.workerId);
      const hs = this.handshakes.get(w.workerId);
      if (cur && cur.lastHeartbeat >= w.lastHeartbeat) {
        // The live heartbeat wins, but it carries no handshake: until the worker's next
        // handshake (with its next heartbeat from worker-sdk, P26) keep its direct subject and
        // start-ack support from the snapshot.
        if (!hs) {
          this.handshakes.set(w.workerId, { readyTopics: [...w.readyTopics], startAck: w.startAck });
          cur.readyTopics = [...w.readyTopics];
          cur.startAck = w.startAck;
        }
        continue;
      }
      this.workers.set(w.workerId, {
        ...w,
        readyTopics: hs?.readyTopics ?? w.readyTopics,
        startAck: hs?.startAck ?? w.startAck,
        lastSeen: Math.max(w.lastHeartbeat, now - floorMs),
        // Its last heartbeat's word, kept in the snapshot's labels (P189): a stopping worker stays unroutable after a warm start.
        draining: w.labels[WORKER_DRAINING_LABEL] === 'true',
        inFlight: 0,
        settled: 0,
      });
      if (!hs) this.handshakes.set(w.workerId, { readyTopics: [...w.readyTopics], startAck: w.startAck });
      added += 1;
    }
    return added;
  }

  /** P310: handshakes kept for workers forgotten after 10 × TTL of silence (P301), for the snapshot. */
  keptHandshakes(): KeptHandshakeInfo[] {
    const out: KeptHandshakeInfo[] = [];
    for (const [workerId, hs] of this.handshakes) {
      if (hs.keptUntil !== undefined && !this.workers.has(workerId) && hs.keptUntil > this.now()) out.push({ workerId, readyTopics: hs.readyTopics, startAck: hs.startAck, keptUntil: hs.keptUntil });
    }
    return out;
  }

  /** P310 warm start: kept handshakes from the snapshot, for workers this replica knows nothing of. */
  hydrateKept(kept: KeptHandshakeInfo[]): number {
    let added = 0;
    for (const k of kept) {
      if (this.handshakes.has(k.workerId) || this.workers.has(k.workerId) || k.keptUntil <= this.now()) continue;
      this.handshakes.set(k.workerId, { readyTopics: [...k.readyTopics], startAck: k.startAck, keptUntil: k.keptUntil });
      added += 1;
    }
    return added;
  }

  /** Whether this replica knows the worker's handshake (heard it, or hydrated it from the snapshot). */
  hasHandshake(workerId: string): boolean {
    return this.handshakes.has(workerId);
  }

  /** Live workers (heartbeat younger than the TTL); also forgets long-dead ones. */
  live(): WorkerView[] {
    const out: WorkerView[] = [];
    for (const [id, w] of this.workers) {
      if (this.isOnline(w)) out.push(w);
      // Not while this replica's bus is away (P339): a long outage would forget every worker, and
      // busBack would have none to give the outage back to.
      else if (this.busDownAt === undefined && this.now() - w.lastHeartbeat > 10 * this.ttlMs) {
        this.workers.delete(id);
        const hs = this.handshakes.get(id);
        if (hs) hs.keptUntil = this.now() + HEARTBEAT_SENT_KEEP_MS;
      }
    }
    // live() runs for every routing decision: the day-long entries are pruned once a minute.
    if (this.now() - this.heartbeatSentPruned > 60_000) {
      this.heartbeatSentPruned = this.now();
      for (const [id, hb] of this.heartbeatSent) {
        if (this.now() - hb.at > HEARTBEAT_SENT_KEEP_MS) this.heartbeatSent.delete(id);
      }
    }
    // A handshake from an id that never heartbeat (a worker that died at start, a misconfigured
    // one) would otherwise be kept for the life of the process, one per id (P73).
    for (const [id, hs] of this.handshakes) {
      if (this.workers.has(id)) continue;
      if (hs.keptUntil !== undefined ? this.now() > hs.keptUntil : hs.at !== undefined && this.now() - hs.at > 10 * this.ttlMs) this.handshakes.delete(id);
    }
    return out;
  }

  all(): WorkerView[] {
    return [...this.workers.values()];
  }
}
