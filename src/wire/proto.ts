// Loads proto/flow.proto with @grpc/proto-loader. Options (documented in docs/export.md):
// keepCase (field names exactly as in the .proto), longs as Number (counters fit in 2^53 and
// FlowEvent uses number), enums as String names, bytes as Buffer, defaults on (absent scalars
// read as 0/''/false, absent messages as null), oneofs on (connection_info names the set member).
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import * as protoLoader from '@grpc/proto-loader';
import type { MethodDefinition } from '@grpc/proto-loader';

/** Full gRPC method path of the one RPC. */
export const EVENTS_METHOD = '/flow.FlowService/Events';

export interface WireTimestamp {
  seconds: number;
  nanos: number;
}

export interface WireEndpoint {
  id: string;
  name: string;
  type: string;
  dns_label: string;
  os: string;
  public_key: Buffer;
}

export interface WireUser {
  id: string;
  name: string;
  email: string;
}

export interface WireFlowFields {
  flow_id: Buffer;
  type: string;
  rule_id: Buffer;
  direction: string;
  protocol: number;
  source_ip: Buffer;
  dest_ip: Buffer;
  port_info?: { source_port: number; dest_port: number } | null;
  icmp_info?: { icmp_type: number; icmp_code: number } | null;
  /** Set by the decoder (oneofs: true): which member of connection_info is present. */
  connection_info?: 'port_info' | 'icmp_info';
  rx_packets: number;
  tx_packets: number;
  rx_bytes: number;
  tx_bytes: number;
  source_resource_id: Buffer;
  dest_resource_id: Buffer;
  num_of_starts: number;
  num_of_ends: number;
  num_of_drops: number;
  source?: WireEndpoint | null;
  destination?: WireEndpoint | null;
  policy_name: string;
  user?: WireUser | null;
  end_reason: string;
  counters_enabled: boolean;
  tcp_flags_initiator: number;
  tcp_flags_responder: number;
  drop_reason: string;
}

/** flow.FlowEvent as proto-loader's (de)serializers see it. */
export interface WireFlowEvent {
  event_id: Buffer;
  timestamp?: WireTimestamp | null;
  public_key: Buffer;
  flow_fields?: WireFlowFields | null;
  isInitiator: boolean;
  window_start?: WireTimestamp | null;
  window_end?: WireTimestamp | null;
  reporter_id: string;
  interface_name: string;
}

export interface WireFlowEventAck {
  event_id: Buffer;
  isInitiator: boolean;
}

export const LOADER_OPTIONS: protoLoader.Options = {
  keepCase: true,
  longs: Number,
  enums: String,
  bytes: Buffer,
  defaults: true,
  oneofs: true,
};

/** Finds proto/flow.proto from dist/, build/src/ or a test build, whichever tree this file runs in. */
export function findProtoFile(): string {
  let dir = __dirname;
  for (;;) {
    const candidate = join(dir, 'proto', 'flow.proto');
    if (existsSync(candidate)) return candidate;
    const up = dirname(dir);
    if (up === dir) throw new Error(`proto/flow.proto not found in any parent of ${__dirname}`);
    dir = up;
  }
}

export interface FlowProto {
  packageDefinition: protoLoader.PackageDefinition;
  events: MethodDefinition<WireFlowEvent, WireFlowEventAck>;
  encodeEvent(msg: Partial<WireFlowEvent>): Buffer;
  decodeEvent(buf: Buffer): WireFlowEvent;
  encodeAck(msg: Partial<WireFlowEventAck>): Buffer;
  decodeAck(buf: Buffer): WireFlowEventAck;
}

let cached: FlowProto | undefined;

/** The loaded contract (loaded once per process). */
export function loadFlowProto(): FlowProto {
  if (cached) return cached;
  const packageDefinition = protoLoader.loadSync(findProtoFile(), LOADER_OPTIONS);
  const service = packageDefinition['flow.FlowService'] as protoLoader.ServiceDefinition;
  const events = service.Events as MethodDefinition<WireFlowEvent, WireFlowEventAck>;
  cached = {
    packageDefinition,
    events,
    encodeEvent: (msg) => events.requestSerialize(msg as WireFlowEvent),
    decodeEvent: (buf) => events.requestDeserialize(buf),
    encodeAck: (msg) => events.responseSerialize(msg as WireFlowEventAck),
    decodeAck: (buf) => events.responseDeserialize(buf),
  };
  return cached;
}
