// Baseline for the safety `Check` figures: the SafetyKernel gRPC service through the same stack
// as the kernel (@cordum/protocol's addGrpcService, grpc-js, protobuf-es), answering every call
// with a constant ALLOW: no policy, no cache, no Redis. Its latency is the floor of ours on
// this machine (docs/performance.md). Started by run.mjs with the bench's bundle of the libs.
//
//   node tools/bench/grpc-floor-server.mjs BUNDLE.cjs HOST:PORT
import { createRequire } from 'node:module';

const [bundle, addr] = process.argv.slice(2);
if (!bundle || !addr) {
  process.stderr.write('usage: grpc-floor-server.mjs BUNDLE.cjs HOST:PORT\n');
  process.exit(2);
}
const c = createRequire(import.meta.url)(bundle);
const server = new c.GrpcServer(c.grpcServerOptions()); // the kernel's own server options
const answer = () => ({ decision: c.Decision.ALLOW, reason: 'floor', ruleId: 'floor', policySnapshot: 'floor' });
c.addGrpcService(server, c.SafetyKernel, {
  check: answer,
  evaluate: answer,
  explain: answer,
  simulate: answer,
  listSnapshots: () => ({ current: 'floor', snapshots: [] }),
  listRules: () => ({ snapshot: 'floor', defaultDecision: 'allow' }),
  decide: c.decideHandler({ check: answer, evaluate: answer }),
});
server.bindAsync(addr, c.GrpcServerCredentials.createInsecure(), (err) => {
  if (err) {
    process.stderr.write(`grpc floor: ${err.message}\n`);
    process.exit(2);
  }
  process.stdout.write(`grpc floor: listening on ${addr}\n`);
});
process.on('SIGTERM', () => server.tryShutdown(() => process.exit(0)));
