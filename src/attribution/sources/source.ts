// The contract of a live attribution source: something that can be asked, now, what the network
// looks like. Sources only read and describe; merging them (file > NetBird API > WireGuard
// interface), applying a snapshot atomically and refreshing on an interval belong to the daemon's
// attribution coordinator, not to a source.
import type { AttributionConfig } from '../config';

/** The live sources' refresh defaults (the attribution.* keys default to these). */
export const LIVE_SOURCE_DEFAULTS = Object.freeze({
  /**
   * Kernel WireGuard has no netlink notifications for peer changes, so the interfaces are read
   * again this often (one netlink dump or UAPI get per interface; 300 peers read in ~1 ms).
   */
  wireguardRefreshS: 5,
  /** NetBird's API is read again this often (a dashboard change shows in new flows within it). */
  netbirdRefreshS: 60,
});

/** One WireGuard peer as the interface reports it (kernel netlink or the UAPI socket). */
export interface WgPeer {
  /** The interface the peer belongs to. */
  readonly ifname: string;
  /** Base64 public key (44 characters), as `wg show` prints it. */
  readonly publicKey: string;
  /** Allowed IPs as prefixes in canonical text ("10.0.0.2/32", "fd00::/64"). */
  readonly allowedIps: readonly string[];
  /** "host:port" ("[v6]:port" for IPv6); '' when the peer has no endpoint yet. */
  readonly endpoint: string;
  /** Latest handshake, seconds since the epoch; 0 = never. */
  readonly lastHandshakeS: number;
}

/** One interface that was read, and how. */
export interface WgInterface {
  readonly ifname: string;
  /** 'uapi': the userspace implementation's socket; 'netlink': kernel WireGuard. */
  readonly via: 'uapi' | 'netlink';
  readonly peers: number;
  readonly ownPrefixes: readonly string[];
}

/** What one read of the WireGuard interfaces found. */
export interface WgSnapshot {
  readonly peers: readonly WgPeer[];
  /**
   * The networks of the interfaces' own addresses ("10.0.0.0/24" for 10.0.0.1/24; IPv6 link-local
   * and host-scope addresses left out): the default overlay.
   */
  readonly ownPrefixes: readonly string[];
  /** Interfaces that could not be read, with why (the others are still in `peers`). */
  readonly errors: readonly { ifname: string; message: string }[];
  /** The interfaces that were read (for status output); absent from sources that do not say. */
  readonly interfaces?: readonly WgInterface[];
}

/** What one fetch of a management API found, already in wgflow's table form. */
export interface ApiSnapshot {
  /** Peers, resources and policies with the API's own ids (overlay included when known). */
  readonly config: AttributionConfig;
  /** Objects read, by kind (peers, groups, users, policies, networks, resources, routers, routes). */
  readonly counts: Readonly<Record<string, number>>;
  /** Non-fatal findings (a policy naming an unknown group, a resource type wgflow cannot match, ...). */
  readonly warnings: readonly string[];
}

/** A source failed: the last good snapshot stays; `kind` labels the metric. */
export class SourceError extends Error {
  constructor(
    readonly source: 'netbird' | 'wireguard',
    readonly kind: 'unauthorized' | 'forbidden' | 'rate_limited' | 'server' | 'timeout' | 'network' | 'invalid',
    message: string,
    /** rate_limited: the server's Retry-After, in seconds (absent when it sent none). */
    readonly retryAfterS?: number,
  ) {
    super(message);
    this.name = 'SourceError';
  }
}

export type SourceName = 'wireguard' | 'netbird';

/** Why a read failed: SourceError's kinds, and "tables" when the merged tables do not build. */
export type SourceErrorKind = SourceError['kind'] | 'tables';
export const SOURCE_ERROR_KINDS: readonly SourceErrorKind[] = ['unauthorized', 'forbidden', 'rate_limited', 'server', 'timeout', 'network', 'invalid', 'tables'];

/** One source as metrics and `ctl status` show it. */
export interface SourceStatus {
  name: SourceName;
  /** Epoch ms of the last good read (null: none yet). */
  lastSuccessMs: number | null;
  /** The last read failed (the snapshot in use is older). */
  failing: boolean;
  lastError: string | null;
  errors: Record<SourceErrorKind, number>;
  /** Good reads since start. */
  syncs: number;
  /** Objects in the snapshot in use, by kind (peers, groups, policies, ...). */
  counts: Record<string, number>;
  warnings: readonly string[];
  /** Interfaces that could not be read (WireGuard), with why. */
  unreadable: readonly string[];
}
