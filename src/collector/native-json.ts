// The collector's JSON fast path in C++ (native/src/json_line.cc): message bytes to the JSON line
// in one call, about a tenth of the JavaScript route's CPU. It handles plain valid events only;
// for anything else (the handshake, a refusal, text that is not valid UTF-8, numbers past 2^53,
// years past 9999) it declines, and the collector takes the JavaScript route, which stays the
// reference: test/collector/event-json.test.ts checks both write the same bytes.
import { loadNative } from '../util/addon';
import type { ByteBuffer } from '../util/byte-buffer';

type FlowEventJson = (src: Uint8Array, start: number, end: number, out: Uint8Array, at: number, receiveMs: number, meta: Uint32Array) => number;

/** Bytes of JSON a message of n bytes can need at most: text escapes take 6 bytes a byte. */
export const maxLineBytes = (n: number): number => 6 * n + 4096;

export class NativeJson {
  /** Offset of the event id in the message of the last line written. */
  private readonly meta = new Uint32Array(1);

  private constructor(private readonly fn: FlowEventJson) {}

  /**
   * The fast path, or null with the reason when the addon cannot be loaded (not built, or
   * disabled with WGFLOW_NATIVE_JSON=0): the collector then writes every line in JavaScript.
   */
  static load(): NativeJson | string {
    if (process.env.WGFLOW_NATIVE_JSON === '0') return 'disabled by WGFLOW_NATIVE_JSON=0';
    try {
      const fn = loadNative().flowEventJson;
      if (typeof fn !== 'function') return 'the native addon predates flowEventJson: run "make build"';
      return new NativeJson(fn);
    } catch (err) {
      return (err as Error).message;
    }
  }

  /**
   * Writes the JSON line (no newline) of the message src[start, end) at out.len WITHOUT moving
   * out.len, and returns its length; the event id is then at eventIdAt. -1: take the JS route.
   */
  write(src: Uint8Array, start: number, end: number, out: ByteBuffer, receiveMs: number): number {
    out.ensure(maxLineBytes(end - start));
    return this.fn(src, start, end, out.buf, out.len, receiveMs, this.meta);
  }

  get eventIdAt(): number {
    return this.meta[0];
  }
}
