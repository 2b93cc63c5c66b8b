/** Anything that answers INFO: a standalone client or one node of a cluster client. */
export interface InfoSource {
  info(section: string): Promise<string>;
}

/**
 * Calls per command so far on one Redis node, from `INFO commandstats` (lower-case names,
 * subcommands as `client|setname`; commands run inside scripts are counted too). Tests diff two
 * readings to count what a piece of code sent.
 */
export async function commandCalls(node: InfoSource): Promise<Map<string, number>> {
  const calls = new Map<string, number>();
  for (const m of (await node.info('commandstats')).matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm)) calls.set(m[1]!, Number(m[2]));
  return calls;
}

/** The calls of `names` in a commandCalls reading, summed (0 for a command never run). */
export function callsOf(calls: Map<string, number>, ...names: string[]): number {
  return names.reduce((sum, n) => sum + (calls.get(n) ?? 0), 0);
}
