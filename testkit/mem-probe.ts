// Preloaded into a daemon under benchmark (NODE_OPTIONS="--require .../mem-probe.js"), it appends
// process.memoryUsage() as one JSON line per second to $WGFLOW_MEM_PROBE: how much of the RSS is
// the JavaScript heap, and how much is memory outside it (ArrayBuffers, native allocations).
import { appendFileSync } from 'node:fs';

const file = process.env.WGFLOW_MEM_PROBE;
if (file) {
  setInterval(() => appendFileSync(file, JSON.stringify({ t: Date.now(), ...process.memoryUsage() }) + '\n'), 1000).unref();
}
