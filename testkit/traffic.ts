// Traffic for the demo, tests and benchmarks, run inside a namespace: node build/testkit/traffic.js MODE ARGS...
//   tcp-server PORT          accept connections, read until EOF, reply "ok", print {"bytes":N} per connection
//   tcp-client HOST PORT N   send N bytes, half-close, wait for the reply and the close
//   udp-echo PORT [ADDR]     echo every datagram (bound to ADDR: replies come from that address)
//   udp-client HOST PORT COUNT SIZE [LPORT]   send COUNT datagrams of SIZE bytes (from LPORT), wait for each echo
//   udp-paced HOST PORT COUNT SIZE INTERVAL_MS  one datagram every INTERVAL_MS from one socket (a long flow), echoes counted
//   udp-stream HOST PORT SIZE INTERVAL_MS LPORT  from LPORT, one datagram every INTERVAL_MS until stdin
//            ends (a flow of a length the test decides), then 500 ms for echoes; prints {"sent","got"}
//   udp-sink HOST PORT FILE  append every datagram received to FILE (a raw capture of a UDP stream)
//   udp-blast HOST PORT LPORT COUNT SIZE  from LPORT, send COUNT datagrams to HOST:PORT in bursts of 64 without
//            waiting for answers, while counting what arrives; prints {"sent","got"} once quiet for 1 s.
//            Both peers blasting at each other make one flow that two CPUs update at once on each side.
import * as dgram from 'node:dgram';
import { appendFileSync } from 'node:fs';
import * as net from 'node:net';

const [mode, ...a] = process.argv.slice(2);

if (mode === 'tcp-server') {
  const srv = net.createServer((s) => {
    let n = 0;
    s.on('data', (d: Buffer) => (n += d.length));
    s.on('end', () => {
      s.end('ok');
      process.stdout.write(JSON.stringify({ bytes: n }) + '\n');
    });
    s.on('error', () => {});
  });
  srv.listen(Number(a[0]), '::', () => process.stdout.write('ready\n'));
} else if (mode === 'tcp-client') {
  const total = Number(a[2]);
  const s = net.connect({ host: a[0], port: Number(a[1]) }, () => {
    const chunk = Buffer.alloc(65536, 0x61);
    let left = total;
    const pump = (): void => {
      while (left > 0) {
        const n = Math.min(left, chunk.length);
        left -= n;
        if (!s.write(n === chunk.length ? chunk : chunk.subarray(0, n))) return void s.once('drain', pump);
      }
      s.end();
    };
    pump();
  });
  let reply = '';
  s.on('data', (d: Buffer) => (reply += d.toString()));
  s.on('close', () => process.exit(reply === 'ok' ? 0 : 3));
  s.on('error', (e: Error) => { console.error(e.message); process.exit(2); });
} else if (mode === 'udp-echo') {
  const addr = a[1] ?? '::';
  const s = dgram.createSocket(addr.includes(':') ? 'udp6' : 'udp4');
  s.on('message', (m, r) => s.send(m, r.port, r.address));
  s.bind(Number(a[0]), addr, () => process.stdout.write('ready\n'));
} else if (mode === 'udp-client') {
  const [host, port, count, size] = [a[0], Number(a[1]), Number(a[2]), Number(a[3])];
  const s = dgram.createSocket(host.includes(':') ? 'udp6' : 'udp4');
  let got = 0;
  const timer = setTimeout(() => { console.error(`udp: ${got}/${count} echoes`); process.exit(2); }, 10000);
  s.on('message', () => {
    got += 1;
    if (got === count) { clearTimeout(timer); s.close(); }
    else s.send(Buffer.alloc(size, 0x62), port, host);
  });
  const go = (): void => s.send(Buffer.alloc(size, 0x62), port, host);
  if (a[4]) s.bind(Number(a[4]), go);
  else go();
} else if (mode === 'udp-send') {
  // count datagrams of size bytes from local port lport (0: any), 2 ms apart, no answer expected.
  const [host, port, count, size, lport] = [a[0], Number(a[1]), Number(a[2]), Number(a[3]), Number(a[4] ?? 0)];
  const s = dgram.createSocket(host.includes(':') ? 'udp6' : 'udp4');
  s.on('error', () => undefined); // an ICMP error answer (unreachable) is expected in some tests
  let sent = 0;
  s.bind(lport, () => {
    const timer = setInterval(() => {
      if (sent === count) {
        clearInterval(timer);
        s.close();
        process.stdout.write(JSON.stringify({ sent }) + '\n');
        return;
      }
      s.send(Buffer.alloc(size, 0x65), port, host);
      sent += 1;
    }, 2);
  });
} else if (mode === 'udp-paced') {
  const [host, port, count, size, interval] = [a[0], Number(a[1]), Number(a[2]), Number(a[3]), Number(a[4])];
  const s = dgram.createSocket(host.includes(':') ? 'udp6' : 'udp4');
  let sent = 0, got = 0;
  s.on('message', () => (got += 1));
  const timer = setInterval(() => {
    if (sent === count) {
      clearInterval(timer);
      setTimeout(() => { s.close(); process.stdout.write(JSON.stringify({ sent, got }) + '\n'); process.exit(got === count ? 0 : 3); }, 500);
      return;
    }
    s.send(Buffer.alloc(size, 0x63), port, host);
    sent += 1;
  }, interval);
} else if (mode === 'udp-blast') {
  const [host, port, lport, count, size] = [a[0], Number(a[1]), Number(a[2]), Number(a[3]), Number(a[4])];
  const s = dgram.createSocket(host.includes(':') ? 'udp6' : 'udp4');
  let sent = 0, got = 0, quietSince = Date.now();
  s.on('message', () => {
    got += 1;
    quietSince = Date.now();
  });
  const payload = Buffer.alloc(size, 0x64);
  const burst = (): void => {
    for (let k = 0; k < 64 && sent < count; k++, sent++) s.send(payload, port, host);
    if (sent < count) setImmediate(burst);
  };
  s.bind(lport, () => {
    process.stdout.write('ready\n');
    // Start on a signal from the test (a line on stdin), so both peers blast at the same time.
    process.stdin.once('data', () => {
      burst();
      const done = setInterval(() => {
        if (sent === count && Date.now() - quietSince > 1000) {
          clearInterval(done);
          s.close();
          process.stdout.write(JSON.stringify({ sent, got }) + '\n');
          process.exit(0);
        }
      }, 100);
    });
  });
} else if (mode === 'udp-stream') {
  const [host, port, size, interval, lport] = [a[0], Number(a[1]), Number(a[2]), Number(a[3]), Number(a[4])];
  const s = dgram.createSocket(host.includes(':') ? 'udp6' : 'udp4');
  let sent = 0, got = 0;
  s.on('message', () => (got += 1));
  s.on('error', (e: Error) => console.error(e.message));
  s.bind(lport, () => {
    const timer = setInterval(() => {
      s.send(Buffer.alloc(size, 0x65), port, host);
      sent += 1;
    }, interval);
    process.stdout.write('ready\n');
    process.stdin.on('data', () => {});
    process.stdin.once('end', () => {
      clearInterval(timer);
      setTimeout(() => { s.close(); process.stdout.write(JSON.stringify({ sent, got }) + '\n'); process.exit(0); }, 500);
    });
  });
} else if (mode === 'udp-sink') {
  const s = dgram.createSocket(a[0].includes(':') ? 'udp6' : 'udp4');
  s.on('message', (m: Buffer) => appendFileSync(a[2], m));
  s.bind(Number(a[1]), a[0], () => process.stdout.write('ready\n'));
} else {
  console.error(`unknown mode ${mode}`);
  process.exit(2);
}
