// Preloaded into a daemon under benchmark (NODE_OPTIONS="--require .../mem-probe.js"), it appends
// process.memoryUsage() as one JSON line per second to $WGFLOW_MEM_PROBE: how much of the RSS is
// the JavaScript heap, and how much is memory outside it (ArrayBuffers, native allocations).
// With --expose-gc, creating the file $WGFLOW_MEM_PROBE.gc asks for a full garbage collection: it
// is done, the file removed, and the next line carries "gc": true.
import { appendFileSync, existsSync, rmSync } from 'node:fs';

const file = process.env.WGFLOW_MEM_PROBE;
if (file) {
  const gc = (globalThis as { gc?: () => void }).gc;
  setInterval(() => {
    let collected = false;
    if (gc && existsSync(`${file}.gc`)) {
      gc();
      gc(); // a second pass for what the first one's finalizers freed (external buffers)
      if (process.env.WGFLOW_MEM_PROBE_TRIM) (require('../src/util/addon') as typeof import('../src/util/addon')).loadNative().trimMemory();
      rmSync(`${file}.gc`, { force: true });
      collected = true;
    }
    appendFileSync(file, JSON.stringify({ t: Date.now(), ...(collected ? { gc: true } : {}), ...process.memoryUsage() }) + '\n');
  }, 1000).unref();
}
