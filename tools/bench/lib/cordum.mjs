// The bench is plain JS; the parts that must match the services exactly (the
// job-store record format, the kernel's gRPC client) come from the TypeScript
// libs, bundled here at run time with esbuild into a temp dir.
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { build } from 'esbuild';
import { tempDir } from './procs.mjs';

const ENTRY = `
export { createJobStore, jobKeys, TERMINAL_STATES } from '@cordum/job-store';
export { createRedis, closeRedis } from '@cordum/redis';
export { addGrpcService, createPolicyClient, Decision, decideHandler, grpcClientFor, grpcServerOptions, SafetyKernel } from '@cordum/protocol';
export { Server as GrpcServer, ServerCredentials as GrpcServerCredentials } from '@grpc/grpc-js';
`;

export async function loadCordum(root) {
  const out = join(tempDir('bench-cordum-'), 'cordum.cjs');
  await build({
    stdin: { contents: ENTRY, resolveDir: root, loader: 'ts', sourcefile: 'bench-entry.ts' },
    bundle: true,
    platform: 'node',
    target: 'node20',
    format: 'cjs',
    outfile: out,
    tsconfig: join(root, 'tsconfig.base.json'),
    loader: { '.lua': 'text' },
    logLevel: 'error',
  });
  // bundleFile: grpc-floor-server.mjs loads the same bundle in a process of its own.
  return { ...createRequire(import.meta.url)(out), bundleFile: out };
}
