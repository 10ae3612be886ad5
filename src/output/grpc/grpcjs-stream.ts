// The exporter's grpc-js transport (`transport: grpc-js`): the same call through @grpc/grpc-js,
// for operators who want the reference client library. It writes one HTTP/2 frame per message,
// so it is slower than the default http2 transport (BENCHMARKS.md, export).
import * as grpc from '@grpc/grpc-js';
import { DecodedAck, decodeAck } from '../../wire/codec';
import { EventStream, StreamHandlers, StreamOptions } from './transport';
import { EVENTS_METHOD } from '../../wire/proto';

const identity = (b: Buffer): Buffer => b;

/** Opens the Events call on a channel of its own (one per attempt: our backoff paces reconnects). */
export function openGrpcJsStream(o: StreamOptions, h: StreamHandlers): EventStream {
  const creds = o.url.tls ? grpc.credentials.createSsl(o.ca ?? null, o.key ?? null, o.cert ?? null) : grpc.credentials.createInsecure();
  const client = new grpc.Client(o.url.target, creds, {
    'grpc.keepalive_time_ms': o.keepaliveTimeMs,
    'grpc.keepalive_timeout_ms': o.keepaliveTimeoutMs,
    'grpc.keepalive_permit_without_calls': 1,
    // Streaming calls are never retried by grpc-js itself (we resend from the spool), and its
    // retry buffer costs time per message.
    'grpc.enable_retries': 0,
  });
  const md = new grpc.Metadata();
  if (o.token !== undefined && o.token !== '') md.set('authorization', `Bearer ${o.token}`);
  const call = client.makeBidiStreamRequest<Buffer, DecodedAck>(EVENTS_METHOD, identity, decodeAck, md, {});
  let ended = false;
  const end = (code: number, details: string): void => {
    if (ended) return;
    ended = true;
    client.close();
    h.onEnd({ code, details });
  };
  call.on('data', (ack: DecodedAck) => {
    if (!ended) h.onAck(ack);
  });
  call.on('error', (err: grpc.ServiceError) => end(err.code ?? grpc.status.UNKNOWN, err.details ?? err.message));
  call.on('status', (st: grpc.StatusObject) => end(st.code, st.details));
  call.on('drain', () => {
    if (!ended) h.onDrain();
  });
  return {
    write(messages: readonly Buffer[]): boolean {
      let ok = true;
      for (const m of messages) ok = call.write(m);
      return ok;
    },
    cancel(): void {
      ended = true;
      call.cancel();
      client.close();
    },
  };
}
