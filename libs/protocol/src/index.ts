// Generated wire types (proto/ is the single source of truth). Each gen file is
// re-exported whole; their exported names are disjoint (checked by tsc: a
// clash between two `export *` would make the name ambiguous and fail use sites).
export * from './gen/cordum/agent/v1/buspacket_pb';
export * from './gen/cordum/agent/v1/job_pb';
export * from './gen/cordum/agent/v1/heartbeat_pb';
export * from './gen/cordum/agent/v1/handshake_pb';
export * from './gen/cordum/agent/v1/alert_pb';
export * from './gen/cordum/v1/safety_pb';
export * from './gen/cordum/v1/api_pb';
export * from './gen/grpc/health/v1/health_pb';

// protobuf-es runtime, re-exported so apps never import @bufbuild/protobuf.
export { create, toBinary, fromBinary, clone, equals, toJson, fromJson, isMessage } from '@bufbuild/protobuf';
export type { DescMessage, DescService, MessageShape, MessageInitShape, JsonValue } from '@bufbuild/protobuf';
export type { GenService, GenServiceMethods } from '@bufbuild/protobuf/codegenv2';
export {
  TimestampSchema,
  timestampNow,
  timestampFromMs,
  timestampFromDate,
  timestampMs,
  timestampDate,
} from '@bufbuild/protobuf/wkt';
export type { Timestamp } from '@bufbuild/protobuf/wkt';

export { ProtocolError, isProtocolError } from './errors';
export type { ProtocolErrorCode } from './errors';
export { PROTOCOL_VERSION, WORKER_DRAINING_LABEL, encodePacket, decodePacket, encodeForSigning, newPacket } from './codec';
export { encodeProgressPacket } from './progress-packet';
export type { ProgressPacketFields } from './progress-packet';
export { validatePacket, decodeValidPacket, JOB_ID_RE, JOB_TOPIC_RE, labelBytes, MAX_LABEL_BYTES, MAX_TOPIC_LENGTH, TENANT_RE } from './validate';
export { SIGNATURE_FIELD, signPacket, verifyPacket, signedBytes, loadSigningKey, loadSigningKeyFile, loadVerifyKeysFile, packetDecoder, packetEncoder, type VerifyKeys } from './sign';
export { stripTopLevelField, encodeLenField } from './wire';
export type { StrippedField } from './wire';
export { grpcServiceDefinition, methodPath, addGrpcService, grpcServerOptions, bindGrpcServer, routeGrpcLogs, shutdownGrpcServer, GRPC_DRAIN_MS, grpcError, GrpcStatus, boundedStatusMessage, clipText, MAX_STATUS_MESSAGE_BYTES, type ServiceDefinitionOptions } from './grpc/server';
export type { GrpcServiceImpl, GrpcLogSink } from './grpc/server';
export { grpcClientFor, parseGrpcAddress, splitGrpcAddress } from './grpc/client';
export type { GrpcClient, GrpcCallOptions, GrpcClientOptions } from './grpc/client';
export { addHealthService, ServingStatus } from './grpc/health';
export { createPolicyClient, decideHandler, KERNEL_NOT_READY, publicKernelError, SUSPECT_PROBE_MS } from './grpc/policy-stream';
export type { PolicyClient, PolicyClientOptions, PolicyCheckInit, PolicyCallError, PolicyStreamImpl, DecideHandler } from './grpc/policy-stream';
export type { HealthService, HealthStatusSource, HealthServiceOptions } from './grpc/health';
export { auditAlert, type AuditFields } from './audit';
