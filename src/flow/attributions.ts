// What a tracked flow keeps of its attribution: three 32-bit indexes (source, destination,
// policy) into tables of the endpoints and policies in use, no object per flow and none per
// combination of them. The tables hold at most as many entries as the attribution tables have
// peers, resources and policies (times the table versions still in use by live flows): entries
// are reference-counted and freed with their last flow, so reloads leave nothing behind.
import type { Attribution, AttributionParts, EndpointInfo, PolicyRef } from '../attribution/attributor';
import type { FlowUser } from '../model/event';

/** Objects (or keys) to small integers, reference-counted. */
class Interned<K, V> {
  private readonly items: (V | undefined)[] = [];
  private readonly keys: (K | undefined)[] = [];
  private refs = new Int32Array(64);
  private readonly free: number[] = [];
  private readonly index = new Map<K, number>();

  get size(): number {
    return this.index.size;
  }

  ref(key: K, make: () => V): number {
    const known = this.index.get(key);
    if (known !== undefined) {
      this.refs[known]++;
      return known;
    }
    const idx = this.free.length > 0 ? this.free.pop()! : this.items.length;
    this.items[idx] = make();
    this.keys[idx] = key;
    if (idx >= this.refs.length) {
      const bigger = new Int32Array(this.refs.length * 2);
      bigger.set(this.refs);
      this.refs = bigger;
    }
    this.refs[idx] = 1;
    this.index.set(key, idx);
    return idx;
  }

  get(idx: number): V {
    return this.items[idx]!;
  }

  unref(idx: number): void {
    if (--this.refs[idx] > 0) return;
    this.index.delete(this.keys[idx]!);
    this.items[idx] = undefined;
    this.keys[idx] = undefined;
    this.free.push(idx);
  }
}

interface EndpointEntry {
  info: EndpointInfo;
  /** The user of flows from this endpoint (a peer's own; empty otherwise). */
  user: FlowUser;
}

const NO_POLICY: PolicyRef = Object.freeze({ id: '', name: '' });

export class AttributionStore {
  private readonly endpoints = new Interned<EndpointInfo, EndpointEntry>();
  private readonly policies = new Interned<PolicyRef | string, PolicyRef>();
  /** Scratch for attributors without attributeParts. */
  private readonly parts: AttributionParts = { source: null!, destination: null!, policy: null, user: null!, skip: '' };
  /** partsOf's policy is known by its text only: refPolicy keys it so. */
  private byText = false;

  /** Entries in use (endpoints + policies). */
  get size(): number {
    return this.endpoints.size + this.policies.size;
  }

  /** The parts of a whole Attribution (for attributors that make those). */
  partsOf(a: Attribution): AttributionParts {
    const p = this.parts;
    p.source = a.source;
    p.destination = a.destination;
    // Policies of a whole Attribution are known by their text only.
    p.policy = a.ruleId === '' && a.policyName === '' ? null : { id: a.ruleId, name: a.policyName };
    p.user = a.user;
    p.skip = a.skip;
    this.byText = true;
    return p;
  }

  /** Source endpoint index (the user goes with it). */
  refSource(info: EndpointInfo, user: FlowUser): number {
    return this.endpoints.ref(info, () => ({ info, user }));
  }

  refDestination(info: EndpointInfo): number {
    return this.endpoints.ref(info, () => ({ info, user: NO_USER }));
  }

  /** The policy of the parts last given (attributeParts' compiled policies are shared objects; partsOf's are keyed by text). */
  refPolicy(p: PolicyRef | null): number {
    const byText = this.byText;
    this.byText = false;
    if (p === null) return this.policies.ref(NO_POLICY, () => NO_POLICY);
    const key = byText ? `${p.id}\u0000${p.name}` : p;
    return this.policies.ref(key, () => ({ id: p.id, name: p.name }));
  }

  endpoint(idx: number): EndpointInfo {
    return this.endpoints.get(idx).info;
  }

  user(idx: number): FlowUser {
    return this.endpoints.get(idx).user;
  }

  policy(idx: number): PolicyRef {
    return this.policies.get(idx);
  }

  unrefPolicy(pol: number): void {
    this.policies.unref(pol);
  }

  unref(src: number, dst: number, pol: number): void {
    this.endpoints.unref(src);
    this.endpoints.unref(dst);
    this.policies.unref(pol);
  }
}

const NO_USER: FlowUser = Object.freeze({ id: '', name: '', email: '' });
