import { composePolicy, type PolicyBundle, type Policy } from '@cordum/config-overlay';
import { snapshotId } from '../policy/canonical';
import { toSnapshot } from '../policy/parse';
import type { SnapshotStore } from './store';

export interface Activation {
  snapshotId: string;
  changed: boolean;
  ruleCount: number;
}

/**
 * The two policy sources (the file, re-read on SIGHUP, and the config bundles,
 * pushed by the config watcher) feed one effective policy (D22). Each update is
 * composed first and committed only if composing succeeds, so an invalid source
 * never replaces a valid policy; updates run one at a time so a slow Redis record
 * cannot let an older composition activate after a newer one.
 */
export class PolicyComposer {
  private bundles: readonly PolicyBundle[] = [];
  private queue: Promise<unknown> = Promise.resolve();
  private fileIdCache: string | undefined;

  constructor(
    private readonly store: SnapshotStore,
    private filePolicy: Policy,
    private readonly now: () => number,
  ) {}

  /** The file's default_decision: the effective one (bundles cannot change it, D22). */
  get defaultDecision(): Policy['default_decision'] {
    return this.filePolicy.default_decision;
  }

  /** Snapshot id of the policy file alone: names the file in Redis (published rule ids, last applied section). */
  get fileId(): string {
    return (this.fileIdCache ??= snapshotId(this.filePolicy));
  }

  /** The rule ids of the policy file, in file order. */
  get fileRuleIds(): string[] {
    return this.filePolicy.rules.map((r) => r.id);
  }

  get bundleIds(): string[] {
    return this.bundles.map((b) => b.id);
  }

  /** Where a rule of the current composition comes from: `file` or `bundle:<id>` ('' when unknown). */
  ruleSource(ruleId: string): string {
    if (this.filePolicy.rules.some((r) => r.id === ruleId)) return 'file';
    const b = this.bundles.find((x) => x.rules.some((r) => r.id === ruleId));
    return b ? `bundle:${b.id}` : '';
  }

  /** Throws PolicyLoadError (nothing changed) when the new file clashes with the current bundles. */
  setFilePolicy(policy: Policy): Promise<Activation> {
    return this.serial(() => this.activate(policy, this.bundles));
  }

  /** Throws PolicyLoadError (nothing changed) when the bundles clash with the file's rule ids. */
  setBundles(bundles: readonly PolicyBundle[]): Promise<Activation> {
    return this.serial(() => this.activate(this.filePolicy, bundles));
  }

  /** (Re)activates the current composition, e.g. at start when no bundle could be loaded. */
  activateCurrent(): Promise<Activation> {
    return this.serial(() => this.activate(this.filePolicy, this.bundles));
  }

  /** Resolves once every queued update has finished (for shutdown). */
  async idle(): Promise<void> {
    await this.queue.catch(() => undefined);
  }

  private async activate(file: Policy, bundles: readonly PolicyBundle[]): Promise<Activation> {
    const snap = toSnapshot(composePolicy(file, bundles), this.now());
    if (file !== this.filePolicy) this.fileIdCache = undefined;
    this.filePolicy = file;
    this.bundles = bundles;
    const { changed } = await this.store.activate(snap);
    return { snapshotId: snap.id, changed, ruleCount: snap.policy.rules.length };
  }

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.queue.then(fn, fn);
    this.queue = run.catch(() => undefined);
    return run;
  }
}
