// A stand-in for NetBird's management API in a test's network namespace (the daemon reads it from
// there): node build/testkit/netbird-fixture-server.js --dir DIR [--token-file FILE] [--listen ADDR:PORT]
//   GET /api/X/Y  answers the JSON file DIR/api/X/Y.json (404 when there is none)
//   --token-file  requests without "Authorization: Token <that token>" get 401
// Prints "ready PORT", then one JSON line per request ({"path","status"}; never the token).
// Commands, one per line on stdin, are applied when no request is in flight and none came for
// QUIET_MS (so one fetch of the account never mixes two states), then echoed as "applied <line>":
//   dir PATH                          serve from PATH from now on
//   answer ok|500|401|malformed|hang  how to answer every request (hang: never answer)
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { parseArgs } from 'node:util';

const QUIET_MS = 500;
const ANSWERS = ['ok', '500', '401', 'malformed', 'hang'] as const;
type Answer = (typeof ANSWERS)[number];

const { values } = parseArgs({ options: { dir: { type: 'string' }, 'token-file': { type: 'string' }, listen: { type: 'string', default: '127.0.0.1:0' } } });
if (values.dir === undefined) {
  console.error('usage: netbird-fixture-server --dir DIR [--token-file FILE] [--listen ADDR:PORT]');
  process.exit(2);
}
let dir = values.dir;
let answer: Answer = 'ok';
const token = values['token-file'] !== undefined ? readFileSync(values['token-file'], 'utf8').trim() : undefined;
let inFlight = 0;
let lastActivity = 0;
const pending: string[] = [];

const log = (o: object): void => void process.stdout.write(`${JSON.stringify(o)}\n`);

function apply(line: string): void {
  const [cmd, arg] = line.trim().split(/\s+/, 2);
  if (cmd === 'dir' && arg) dir = arg;
  else if (cmd === 'answer' && (ANSWERS as readonly string[]).includes(arg)) answer = arg as Answer;
  else {
    process.stdout.write(`bad command ${JSON.stringify(line)}\n`);
    return;
  }
  process.stdout.write(`applied ${line.trim()}\n`);
}

setInterval(() => {
  if (pending.length > 0 && inFlight === 0 && Date.now() - lastActivity >= QUIET_MS) apply(pending.shift()!);
}, 50);

let buf = '';
process.stdin.on('data', (d: Buffer) => {
  buf += d.toString();
  let nl: number;
  while ((nl = buf.indexOf('\n')) >= 0) {
    const line = buf.slice(0, nl);
    buf = buf.slice(nl + 1);
    if (line.trim() !== '') pending.push(line);
  }
});
// The test ends this process by PID; a closed stdin (the test gone) ends it too.
process.stdin.on('end', () => process.exit(0));

const server = createServer((req, res) => {
  inFlight += 1;
  lastActivity = Date.now();
  res.on('close', () => {
    inFlight -= 1;
    lastActivity = Date.now();
  });
  const path = new URL(req.url ?? '/', 'http://x').pathname;
  const send = (status: number, body: string): void => {
    log({ path, status });
    res.writeHead(status, { 'Content-Type': 'application/json', 'X-Request-Id': `fixture-${Date.now()}` });
    res.end(body);
  };
  if (answer === 'hang') return log({ path, status: 'hang' });
  if (answer === '500') return send(500, JSON.stringify({ message: 'internal server error', code: 500 }));
  if (answer === '401' || (token !== undefined && req.headers.authorization !== `Token ${token}`)) {
    return send(401, JSON.stringify({ message: 'token invalid', code: 401 }));
  }
  if (answer === 'malformed') return send(200, '[{"id": "cq1peer0cut');
  const segs = path.split('/').filter(Boolean);
  if (req.method !== 'GET' || segs[0] !== 'api' || segs.some((s) => !/^[A-Za-z0-9_-][A-Za-z0-9._-]*$/.test(s))) {
    return send(404, JSON.stringify({ message: 'not found', code: 404 }));
  }
  let body: string;
  try {
    body = readFileSync(join(dir, ...segs) + '.json', 'utf8');
  } catch {
    return send(404, JSON.stringify({ message: 'not found', code: 404 }));
  }
  send(200, body);
});

const [host, port] = [values.listen.slice(0, values.listen.lastIndexOf(':')), Number(values.listen.slice(values.listen.lastIndexOf(':') + 1))];
server.listen(port, host, () => process.stdout.write(`ready ${(server.address() as AddressInfo).port}\n`));
