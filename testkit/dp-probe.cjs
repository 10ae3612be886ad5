// Runs inside a network namespace (ip netns exec NS node dp-probe.cjs [opts-json]) and drives a
// Datapath there: the kernel only lets a process attach to interfaces of its own namespace.
// Protocol: one JSON command per stdin line, one JSON answer per stdout line.
const { Datapath } = require('../dist/datapath/datapath.js');
const readline = require('node:readline');

const opts = JSON.parse(process.argv[2] || '{}');
let dp;
try {
  dp = Datapath.open(opts);
} catch (err) {
  process.stdout.write(JSON.stringify({ ok: false, error: err.message, code: err.code }) + '\n');
  process.exit(1);
}
const records = [];
let polling = true;
(async () => {
  while (polling) {
    try {
      for (const r of await dp.poll(20)) records.push({ ...r, key: r.key.toJSON() });
    } catch (err) {
      if (polling) process.stderr.write(`poll: ${err.message}\n`);
      break;
    }
  }
})();

const strip = (e) => ({ key: e.key.toJSON(), value: e.value });
const handlers = {
  attach: (c) => dp.attach(c.ifname, c.mode),
  detach: (c) => dp.detach(c.ifname),
  attachments: () => dp.attachments(),
  counting: (c) => dp.setCounting(c.on),
  flows: async () => (await dp.readFlows()).slice().map(strip),
  drain: async () => (await dp.drainFlows()).slice().map(strip),
  records: () => records.splice(0),
  stats: () => dp.stats(),
  mapInfo: () => dp.mapInfo(),
  exit: () => {
    polling = false;
    dp.close();
    setTimeout(() => process.exit(0), 10);
  },
};

readline.createInterface({ input: process.stdin }).on('line', async (line) => {
  const c = JSON.parse(line);
  try {
    const result = await handlers[c.cmd](c);
    process.stdout.write(JSON.stringify({ ok: true, result: result ?? null }) + '\n');
  } catch (err) {
    process.stdout.write(JSON.stringify({ ok: false, error: err.message, code: err.code }) + '\n');
  }
});
process.stdout.write(JSON.stringify({ ok: true, result: 'ready' }) + '\n');
