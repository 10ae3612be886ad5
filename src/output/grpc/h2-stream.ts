// The exporter's default transport: the gRPC call spoken directly over node:http2.
//
// Why not grpc-js: it frames and writes every message on its own (one HTTP/2 DATA frame, one
// write request each) and tops out near 30-40k messages/s on our VMs. gRPC allows any number of
// length-prefixed messages in one DATA frame, so a batch of events goes out as one write here.
// On the wire this is ordinary gRPC (PROTOCOL-HTTP2 of the gRPC spec): request headers, framed
// protobuf messages, a response with grpc-status in its trailers; any gRPC server accepts it.
import * as http2 from 'node:http2';
import { CodecError, decodeAck } from '../../wire/codec';
import { decodeGrpcMessage, frameMessages, GrpcStatus, statusOfHttp } from '../../wire/grpc';
import { CallStatus, EventStream, StreamHandlers, StreamOptions } from './transport';
import { EVENTS_METHOD } from '../../wire/proto';

const USER_AGENT = 'wgflow-exporter';

/** The status a headers block carries, if it has one (trailers, or a trailers-only response). */
function statusOfHeaders(h: http2.IncomingHttpHeaders): CallStatus | null {
  const raw = h['grpc-status'];
  if (raw === undefined) return null;
  const code = Number(Array.isArray(raw) ? raw[0] : raw);
  return { code: Number.isInteger(code) ? code : GrpcStatus.UNKNOWN, details: decodeGrpcMessage(h['grpc-message']) };
}

/** Opens the Events call on a connection of its own (one per attempt, like a fresh channel). */
export function openH2Stream(o: StreamOptions, h: StreamHandlers): EventStream {
  const authority = o.url.target;
  const session = http2.connect(`${o.url.tls ? 'https' : 'http'}://${authority}`, {
    ...(o.url.tls ? { ca: o.ca, cert: o.cert, key: o.key, ALPNProtocols: ['h2'] } : {}),
    // Acks are small; the default 64 KiB windows are plenty for them. Keep the peer's settings.
    settings: { enablePush: false },
  });
  let ended = false;
  let status: CallStatus | null = null;
  let keepalive: NodeJS.Timeout | null = null;
  let pingTimer: NodeJS.Timeout | null = null;

  const finish = (st: CallStatus): void => {
    if (ended) return;
    ended = true;
    if (keepalive) clearInterval(keepalive);
    if (pingTimer) clearTimeout(pingTimer);
    if (!session.destroyed) session.destroy();
    h.onEnd(st);
  };

  session.on('error', (err: Error & { code?: string }) => finish({ code: GrpcStatus.UNAVAILABLE, details: `${err.code ? `${err.code}: ` : ''}${err.message}` }));
  session.on('close', () => finish(status ?? { code: GrpcStatus.UNAVAILABLE, details: 'connection closed' }));

  const headers: http2.OutgoingHttpHeaders = {
    ':method': 'POST',
    ':path': EVENTS_METHOD,
    ':authority': authority,
    'content-type': 'application/grpc',
    te: 'trailers',
    'user-agent': USER_AGENT,
  };
  if (o.token !== undefined && o.token !== '') headers.authorization = `Bearer ${o.token}`;
  const stream = session.request(headers, { endStream: false });
  // Incoming acks: length-prefixed messages split across DATA frames anywhere.
  let pending: Buffer | null = null;

  stream.on('response', (rh) => {
    const httpStatus = Number(rh[':status']);
    const st = statusOfHeaders(rh);
    if (st) status = st; // trailers-only response: the call is already over
    else if (httpStatus !== 200) status = { code: statusOfHttp(httpStatus), details: `collector answered HTTP ${httpStatus}` };
    else if (!String(rh['content-type'] ?? '').startsWith('application/grpc')) {
      status = { code: GrpcStatus.UNKNOWN, details: `collector answered with content-type ${String(rh['content-type'])}, not application/grpc` };
    }
    // A status in the response headers (trailers-only) ends the call now, whatever it says.
    if (status) finish(status);
  });
  // Trailers end the call (gRPC over HTTP/2): do not wait for 'close', which needs our half of the
  // stream to end too, and the exporter never ends it. Waiting hung the exporter for good after
  // any error status from the collector.
  stream.on('trailers', (t) => {
    status = statusOfHeaders(t) ?? { code: GrpcStatus.INTERNAL, details: 'trailers without grpc-status' };
    if (pending !== null && status.code === GrpcStatus.OK) status = { code: GrpcStatus.INTERNAL, details: `stream ended inside an ack message (${pending.length} bytes of it pending)` };
    finish(status);
  });
  // The server ended its half without trailers: the call is over, and not well.
  stream.on('end', () => finish(status ?? { code: GrpcStatus.INTERNAL, details: 'collector ended the stream without a grpc-status' }));

  stream.on('data', (chunk: Buffer) => {
    if (ended) return;
    let buf = pending ? Buffer.concat([pending, chunk]) : chunk;
    let off = 0;
    try {
      while (buf.length - off >= 5) {
        const len = buf.readUInt32BE(off + 1);
        if (buf.length - off - 5 < len) break;
        if (buf[off] !== 0) throw new CodecError('compressed ack, but no compression was offered');
        const ack = decodeAck(buf.subarray(off + 5, off + 5 + len));
        off += 5 + len;
        h.onAck(ack);
        if (ended) return;
      }
    } catch (err) {
      finish({ code: GrpcStatus.INTERNAL, details: `bad ack from collector: ${(err as Error).message}` });
      return;
    }
    buf = buf.subarray(off);
    pending = buf.length > 0 ? buf : null;
  });
  stream.on('drain', () => {
    if (!ended) h.onDrain();
  });
  stream.on('error', (err: Error) => {
    if (!status) status = { code: GrpcStatus.UNAVAILABLE, details: err.message };
  });
  stream.on('close', () => {
    if (!status) {
      const rst = stream.rstCode;
      status = rst === http2.constants.NGHTTP2_REFUSED_STREAM
        ? { code: GrpcStatus.UNAVAILABLE, details: 'collector refused the stream' }
        : { code: rst === http2.constants.NGHTTP2_CANCEL ? GrpcStatus.CANCELLED : GrpcStatus.UNAVAILABLE, details: `stream closed without a status (HTTP/2 code ${rst})` };
    }
    finish(status);
  });

  // Keepalive: a PING every keepaliveTimeMs; no answer within keepaliveTimeoutMs ends the call.
  keepalive = setInterval(() => {
    if (ended || pingTimer) return;
    pingTimer = setTimeout(() => {
      status = { code: GrpcStatus.UNAVAILABLE, details: `keepalive: no answer to PING within ${o.keepaliveTimeoutMs} ms` };
      session.destroy();
    }, o.keepaliveTimeoutMs);
    pingTimer.unref();
    const sent = session.ping((err) => {
      if (pingTimer) clearTimeout(pingTimer);
      pingTimer = null;
      if (err && !ended) {
        status = { code: GrpcStatus.UNAVAILABLE, details: `keepalive: ${err.message}` };
        session.destroy();
      }
    });
    if (!sent && pingTimer) {
      clearTimeout(pingTimer);
      pingTimer = null;
    }
  }, o.keepaliveTimeMs);
  keepalive.unref();

  return {
    write(messages: readonly Buffer[]): boolean {
      if (ended || messages.length === 0) return !ended;
      return stream.write(frameMessages(messages));
    },
    cancel(): void {
      ended = true;
      if (keepalive) clearInterval(keepalive);
      if (pingTimer) clearTimeout(pingTimer);
      if (!stream.destroyed) stream.close(http2.constants.NGHTTP2_CANCEL);
      if (!session.destroyed) session.destroy();
    },
  };
}
