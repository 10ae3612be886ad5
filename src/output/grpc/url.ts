// Collector URLs: grpc://host:port (plaintext), grpcs://host:port and https://host[:port] (TLS).

export interface CollectorUrl {
  /** host:port as grpc-js expects it (IPv6 in brackets). */
  target: string;
  host: string;
  port: number;
  tls: boolean;
  /** The URL as given (for logs). */
  text: string;
}

export class CollectorUrlError extends Error {
  /** The message without its "collector URL" lead, for callers that name the setting themselves. */
  readonly reason: string;
  constructor(text: string, why: string) {
    super(`collector URL ${JSON.stringify(text)}: ${why}`);
    this.reason = `${JSON.stringify(text)}: ${why}`;
    this.name = 'CollectorUrlError';
  }
}

const EXAMPLES = 'e.g. grpc://127.0.0.1:50051, grpcs://collector.example:443 or https://collector.example';

export function parseCollectorUrl(text: string): CollectorUrl {
  const bad = (why: string): never => {
    throw new CollectorUrlError(text, `${why} (${EXAMPLES})`);
  };
  const m = /^([a-zA-Z][a-zA-Z0-9+.-]*):\/\/(.*)$/.exec(text.trim());
  if (!m) return bad('missing scheme; use grpc://, grpcs:// or https://');
  const scheme = m[1].toLowerCase();
  if (scheme !== 'grpc' && scheme !== 'grpcs' && scheme !== 'https') {
    return bad(`unsupported scheme "${scheme}://"${scheme === 'http' ? ' (plaintext is grpc://)' : ''}; use grpc://, grpcs:// or https://`);
  }
  let url: URL;
  try {
    // WHATWG URL parses host and port for any scheme written as scheme://host:port.
    url = new URL(`http://${m[2]}`);
  } catch {
    return bad('not a valid host[:port]');
  }
  if (url.username || url.password) bad('credentials in the URL are not supported; give the token with --token or collector.token');
  if ((url.pathname && url.pathname !== '/') || url.search || url.hash) bad('a gRPC collector URL has no path, query or fragment');
  const host = url.hostname;
  if (!host) bad('missing host');
  // new URL() treats port 80 as the http default and drops it: read it from the text instead.
  const portText = /:(\d+)\/?$/.exec(m[2])?.[1];
  let port: number;
  if (portText !== undefined) {
    port = Number(portText);
    if (!(port >= 1 && port <= 65535)) bad(`port ${portText} is out of range 1..65535`);
  } else if (scheme === 'grpc') {
    return bad('missing port (grpc:// has no default port)');
  } else {
    port = 443;
  }
  return { target: `${host}:${port}`, host: host.replace(/^\[|\]$/g, ''), port, tls: scheme !== 'grpc', text };
}

export interface TlsFiles {
  caFile?: string;
  certFile?: string;
  keyFile?: string;
}

/**
 * What is wrong with the TLS files given for a collector, if anything (which file, and why). The
 * exporter refuses with this and the configuration check reports it, so the two cannot disagree.
 */
export function tlsFilesProblem(url: CollectorUrl, f: TlsFiles): { file: keyof TlsFiles; problem: string } | null {
  if (f.certFile !== undefined && f.keyFile === undefined) return { file: 'keyFile', problem: 'a client certificate needs its key: set both or neither' };
  if (f.keyFile !== undefined && f.certFile === undefined) return { file: 'certFile', problem: 'a client key needs its certificate: set both or neither' };
  if (!url.tls && (f.caFile !== undefined || f.certFile !== undefined)) {
    return { file: f.caFile !== undefined ? 'caFile' : 'certFile', problem: `TLS files were given but ${JSON.stringify(url.text)} is plaintext; use grpcs:// or https://` };
  }
  return null;
}
