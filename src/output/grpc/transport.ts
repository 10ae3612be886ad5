// What the exporter needs from a transport: one /flow.FlowService/Events call that takes batches
// of encoded FlowEvent messages and hands back decoded acks and, once, the final status.
// Two implementations: h2-stream.ts (node:http2, the default: a whole batch in one DATA frame) and
// grpcjs-stream.ts (@grpc/grpc-js: one frame per message).
import type { DecodedAck } from '../../wire/codec';
import type { CollectorUrl } from './url';

export interface CallStatus {
  code: number;
  details: string;
}

export interface StreamHandlers {
  /** One FlowEventAck from the collector. */
  onAck(ack: DecodedAck): void;
  /** The transport can take more after write() returned false. */
  onDrain(): void;
  /** The call is over (called exactly once): status from the server, or why the transport gave up. */
  onEnd(status: CallStatus): void;
}

export interface EventStream {
  /** Sends encoded FlowEvent messages in order; false: wait for onDrain before writing more. */
  write(messages: readonly Buffer[]): boolean;
  /** Ends the call and its connection now; onEnd is not called after this. */
  cancel(): void;
}

/** Everything a transport needs to open a call. */
export interface StreamOptions {
  url: CollectorUrl;
  /** Sent as `authorization: Bearer <token>` when set. */
  token?: string;
  /** TLS only: trusted CA bundle, optional client certificate and key (PEM). */
  ca?: Buffer;
  cert?: Buffer;
  key?: Buffer;
  keepaliveTimeMs: number;
  keepaliveTimeoutMs: number;
}

export type Transport = 'http2' | 'grpc-js';
export const TRANSPORTS: readonly Transport[] = ['http2', 'grpc-js'];
