import { availableParallelism, freemem, loadavg, totalmem } from 'node:os';

const clampPct = (v: number): number => (Number.isFinite(v) ? Math.min(100, Math.max(0, v)) : 0);

/** 1-minute load average as a share of the cores, 0-100 (the scheduler adds cpu_load/100 to active_jobs). */
export function cpuLoadPct(): number {
  return clampPct(((loadavg()[0] ?? 0) / Math.max(1, availableParallelism())) * 100);
}

/** Used share of physical memory, 0-100. */
export function memoryLoadPct(): number {
  const total = totalmem();
  return total > 0 ? clampPct((1 - freemem() / total) * 100) : 0;
}
