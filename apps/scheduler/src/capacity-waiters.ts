// P225: jobs this replica found waiting for worker capacity (D48 backpressure: every candidate at
// ≥ 90 % of max_parallel_jobs), by topic, oldest first, with what routing needs of them (their
// placement labels and requires). A result that frees a worker's slot drives one the worker can
// run at once (replayer.ts handOffCapacity), as a freed concurrency slot does (P70). Without it a
// waiting job went at its next JetStream redelivery (250 ms) and, after its 20 deliveries, only at
// the replayer leader's turn: a topic with short jobs and a backlog drained at max_parallel_jobs
// per SCHEDULER_REPLAY_INTERVAL, a third of its workers' capacity.
// Hints only, per replica and in memory, for PENDING jobs: `job:retry` and the submit stream stay
// the record, so a hint lost (a restart, a result that lands on another replica) costs only the
// wait it saved, and a stale one (the job went another way) one look under its lock.

/** Hints kept per topic and topics kept; past them the oldest hint, or the least recently served topic, goes. */
const MAX_PER_TOPIC = 10_000;
const MAX_TOPICS = 1_000;
/** Hints of a topic looked at for one freed slot (the oldest first). */
const SCAN_PER_TOPIC = 32;

export interface WaitingJob {
  labels: Record<string, string>;
  requires: string[];
}

export class CapacityWaiters {
  private readonly byTopic = new Map<string, Map<string, WaitingJob>>();

  /** The PENDING job waits for a worker of its topic to have room; a job already listed keeps its place. */
  add(topic: string, id: string, job: WaitingJob): void {
    let ids = this.byTopic.get(topic);
    if (!ids) {
      if (this.byTopic.size >= MAX_TOPICS) {
        const stalest = this.byTopic.keys().next();
        if (!stalest.done) this.byTopic.delete(stalest.value);
      }
      this.byTopic.set(topic, (ids = new Map()));
    }
    if (ids.has(id)) return;
    if (ids.size >= MAX_PER_TOPIC) {
      const oldest = ids.keys().next();
      if (!oldest.done) ids.delete(oldest.value);
    }
    ids.set(id, { labels: job.labels, requires: job.requires });
  }

  /** Whether this replica lists the job as waiting for capacity (P257: it was allowed at that look). */
  has(topic: string, id: string): boolean {
    return this.byTopic.get(topic)?.has(id) ?? false;
  }

  /** The job is no longer waiting (an attempt of it is being sent). */
  delete(topic: string, id: string): void {
    const ids = this.byTopic.get(topic);
    if (!ids?.delete(id)) return;
    if (ids.size === 0) this.byTopic.delete(topic);
  }

  /**
   * Removes and returns the longest-waiting job that `runs` (the freed worker can run it: its
   * topic, placement and requires), among the oldest SCAN_PER_TOPIC of each topic. The topic it
   * came from goes to the back, so a worker serving several topics takes from each in turn.
   */
  take(runs: (topic: string, job: WaitingJob) => boolean): string | undefined {
    for (const [topic, ids] of this.byTopic) {
      let looked = 0;
      for (const [id, job] of ids) {
        if (looked++ >= SCAN_PER_TOPIC) break;
        if (!runs(topic, job)) continue;
        ids.delete(id);
        this.byTopic.delete(topic);
        if (ids.size > 0) this.byTopic.set(topic, ids);
        return id;
      }
    }
    return undefined;
  }

  /** Jobs listed, all topics together. */
  size(): number {
    let n = 0;
    for (const ids of this.byTopic.values()) n += ids.size;
    return n;
  }
}
