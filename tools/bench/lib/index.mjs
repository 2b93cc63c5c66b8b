export * from './procs.mjs';
export * from './stats.mjs';
