// P225: jobs this replica found waiting for worker capacity (D48 backpressure: every candidate at
// ≥ 90 % of max_parallel_jobs), by topic, oldest first. A result that frees a worker's slot drives
// one of them at once (replayer.ts handOffCapacity), as a freed concurrency slot does (P70).
// Without it a waiting job went at its next JetStream redelivery (250 ms) and, after its 20
// deliveries, only at the replayer leader's turn: a topic with short jobs and a backlog drained at
// max_parallel_jobs per SCHEDULER_REPLAY_INTERVAL, a third of its workers' capacity.
// Hints only, per replica and in memory: `job:retry` and the submit stream stay the record, so a
// hint lost (a restart, a result that lands on another replica) costs only the wait it saved.

/** Hints kept per topic and topics kept; past them the oldest hint (or a new topic) is dropped. */
const MAX_PER_TOPIC = 10_000;
const MAX_TOPICS = 1_000;

export class CapacityWaiters {
  private readonly byTopic = new Map<string, Set<string>>();

  /** The job waits for a worker of its topic to have room; a job already listed keeps its place. */
  add(topic: string, id: string): void {
    let ids = this.byTopic.get(topic);
    if (!ids) {
      if (this.byTopic.size >= MAX_TOPICS) return;
      this.byTopic.set(topic, (ids = new Set()));
    }
    if (ids.has(id)) return;
    if (ids.size >= MAX_PER_TOPIC) {
      const oldest = ids.values().next();
      if (!oldest.done) ids.delete(oldest.value);
    }
    ids.add(id);
  }

  /** The job is no longer waiting (an attempt of it is being sent). */
  delete(topic: string, id: string): void {
    const ids = this.byTopic.get(topic);
    if (!ids?.delete(id)) return;
    if (ids.size === 0) this.byTopic.delete(topic);
  }

  /**
   * Removes and returns the longest-waiting job of a topic `serves` accepts. The topic it came from
   * goes to the back, so a worker serving several topics takes from each in turn.
   */
  take(serves: (topic: string) => boolean): string | undefined {
    for (const [topic, ids] of this.byTopic) {
      if (!serves(topic)) continue;
      const first = ids.values().next();
      if (first.done) continue;
      ids.delete(first.value);
      this.byTopic.delete(topic);
      if (ids.size > 0) this.byTopic.set(topic, ids);
      return first.value;
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
