// gRPC over HTTP/2, the parts both ends share (PROTOCOL-HTTP2 of the gRPC spec): status codes,
// the percent-encoding of grpc-message, message framing, and the mapping of HTTP statuses from
// servers and proxies that did not answer in gRPC. The exporter's transports and the collector
// both use these; neither owns them.

/** gRPC status codes (the gRPC spec's numbers). */
export const GrpcStatus = {
  OK: 0,
  CANCELLED: 1,
  UNKNOWN: 2,
  INVALID_ARGUMENT: 3,
  DEADLINE_EXCEEDED: 4,
  PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: 8,
  UNIMPLEMENTED: 12,
  INTERNAL: 13,
  UNAVAILABLE: 14,
  UNAUTHENTICATED: 16,
} as const;

/** Name of a status code for logs ("UNAVAILABLE"), or the number as text. */
export function statusName(code: number): string {
  for (const [name, c] of Object.entries(GrpcStatus)) if (c === code) return name;
  return String(code);
}

/** grpc-message is percent-encoded UTF-8: printable ASCII but '%' as is, every other byte %XX. */
export function encodeGrpcMessage(msg: string): string {
  return Array.from(Buffer.from(msg, 'utf8'))
    .map((b) => (b >= 0x20 && b <= 0x7e && b !== 0x25 ? String.fromCharCode(b) : `%${b.toString(16).toUpperCase().padStart(2, '0')}`))
    .join('');
}

/** The text of a grpc-message header (a malformed encoding is taken as it is). */
export function decodeGrpcMessage(v: string | string[] | undefined): string {
  const text = Array.isArray(v) ? v.join(',') : (v ?? '');
  try {
    return decodeURIComponent(text);
  } catch {
    return text;
  }
}

/** Bytes before each message on the wire: a flag (0: not compressed) and a u32 BE length. */
export const MESSAGE_PREFIX_BYTES = 5;

/** Frames messages for the wire, back to back in one buffer. */
export function frameMessages(messages: readonly Buffer[]): Buffer {
  let total = 0;
  for (const m of messages) total += MESSAGE_PREFIX_BYTES + m.length;
  const out = Buffer.allocUnsafe(total);
  let o = 0;
  for (const m of messages) {
    out[o] = 0;
    out.writeUInt32BE(m.length, o + 1);
    out.set(m, o + MESSAGE_PREFIX_BYTES); // cheaper than m.copy, a call into C++
    o += MESSAGE_PREFIX_BYTES + m.length;
  }
  return out;
}

/** One message framed for the wire. */
export const frameMessage = (msg: Buffer): Buffer => frameMessages([msg]);

/** gRPC's mapping of HTTP statuses from servers and proxies that did not answer in gRPC. */
export function statusOfHttp(httpStatus: number): number {
  switch (httpStatus) {
    case 400:
      return GrpcStatus.INTERNAL;
    case 401:
      return GrpcStatus.UNAUTHENTICATED;
    case 403:
      return GrpcStatus.PERMISSION_DENIED;
    case 404:
      return GrpcStatus.UNIMPLEMENTED;
    case 429:
    case 502:
    case 503:
    case 504:
      return GrpcStatus.UNAVAILABLE;
    default:
      return GrpcStatus.UNKNOWN;
  }
}
