// The drop probe against the kernel: UDP to a closed port on a watched loopback is dropped with
// NO_SOCKET and counted exactly; the same drop in another network namespace (whose loopback has
// the same ifindex) is not; a full drop map counts what it could not hold; detach stops it; a
// probe that cannot load says so and the daemon's switch reports "unavailable".
import { execFileSync, spawn } from 'node:child_process';
import { join } from 'node:path';
import { readdirSync, readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import pino from 'pino';
import { Attributor } from '../../src/attribution/attributor';
import { dropMapBytes, DropProbe, dropReasonName } from '../../src/datapath/drops';
import { DropEvents, DropsUnavailableError } from '../../src/daemon/drops';
import type { FlowEvent } from '../../src/model/event';
import { describePrivileged, REPO } from '../helpers/env';
import { ensureBuilt } from '../export/helpers';

/** count UDP datagrams of size bytes to 127.0.0.1:port (closed) from inside ns (or here). */
function sendClosed(count: number, size: number, firstPort: number, ports = 1, ns?: string): void {
  const script = `const s=require('dgram').createSocket('udp4');let i=0;const t=setInterval(()=>{if(i===${count}){clearInterval(t);s.close();return}s.send(Buffer.alloc(${size}),${firstPort}+(i%${ports}),'127.0.0.1');i++},1)`;
  if (ns) execFileSync('ip', ['netns', 'exec', ns, process.execPath, '-e', script]);
  else execFileSync(process.execPath, ['-e', script]);
}

const settle = (): Promise<void> => new Promise((r) => setTimeout(r, 50));

describePrivileged('the drop probe in the kernel', () => {
  it('counts drops of the watched interface in this namespace only, exactly, with the kernel reason', async () => {
    const ns = `wgfdrop${process.pid}`;
    execFileSync('ip', ['netns', 'add', ns]);
    const probe = DropProbe.open({ maxKeys: 64 });
    try {
      execFileSync('ip', ['netns', 'exec', ns, 'ip', 'link', 'set', 'lo', 'up']);
      probe.watch([1]); // lo
      probe.attach();
      expect(probe.attached).toBe(true);
      await probe.drain(); // whatever the machine dropped before
      sendClosed(25, 100, 39999);
      sendClosed(40, 100, 39999, 1, ns); // the same drop, another namespace: not ours
      await settle();
      const got = (await probe.drain()).filter((d) => d.dport === 39999);
      expect(got).toHaveLength(1);
      expect(got[0]).toMatchObject({ family: 4, proto: 17, packets: 25, bytes: 25 * 128, dir: 0, ifindex: 1 });
      expect(dropReasonName(got[0].reason)).toBe('NO_SOCKET');
      expect(Buffer.from(got[0].saddr).join('.')).toBe('127.0.0.1');
      expect(got[0].lastNs).toBeGreaterThanOrEqual(got[0].firstNs);
      const reasons = probe.reasons();
      expect(reasons.find((r) => r.reason === 'NO_SOCKET')!.packets).toBeGreaterThanOrEqual(25);
      // Drained: the next window starts empty.
      expect((await probe.drain()).filter((d) => d.dport === 39999)).toEqual([]);
      probe.detach();
      sendClosed(5, 100, 39999);
      await settle();
      expect((await probe.drain()).filter((d) => d.dport === 39999)).toEqual([]);
    } finally {
      probe.close();
      execFileSync('ip', ['netns', 'del', ns]);
    }
  });

  it('drops without a device (the TCP layer clears it): counted in this namespace, never for another namespace\'s same ifindex', async () => {
    // A receiver that never reads, a sender that keeps writing: TCP drops its window probes and
    // retransmissions (TCP_OLD_SEQUENCE, TCP_ZEROWINDOW, ...) after clearing skb->dev, so only
    // skb_iif (lo: ifindex 1 in every namespace) and the socket tell where they were.
    const script = `const net=require('net');const srv=net.createServer({},(c)=>c.pause());srv.listen(Number(process.argv[1]),'127.0.0.1',()=>{const c=net.connect(Number(process.argv[1]),'127.0.0.1',()=>{const b=Buffer.alloc(65536);const t=setInterval(()=>{for(let i=0;i<50;i++)c.write(b)},10);setTimeout(()=>{clearInterval(t);process.exit(0)},Number(process.argv[2]))})})`;
    const nsA = `wgfdropa${process.pid}`, nsB = `wgfdropb${process.pid}`;
    const probe = DropProbe.open({ maxKeys: 256 });
    try {
      for (const ns of [nsA, nsB]) {
        execFileSync('ip', ['netns', 'add', ns]);
        execFileSync('ip', ['netns', 'exec', ns, 'ip', 'link', 'set', 'lo', 'up']);
      }
      // Watch lo of namespace A (namespaces deleted at the end take their sockets with them:
      // nothing of this test retransmits into the next one).
      probe.watch([1], Number(execFileSync('stat', ['-L', '-c', '%i', `/run/netns/${nsA}`], { encoding: 'utf8' })));
      probe.attach();
      await probe.drain();
      const mine = (d: { sport: number; dport: number }, port: number): boolean => d.sport === port || d.dport === port;
      const other = spawn('ip', ['netns', 'exec', nsB, process.execPath, '-e', script, '39911', '4000'], { stdio: 'ignore' });
      execFileSync('ip', ['netns', 'exec', nsA, process.execPath, '-e', script, '39912', '4000']);
      await new Promise((r) => (other.exitCode !== null ? r(null) : other.once('exit', r)));
      await settle();
      const got = await probe.drain();
      expect(got.filter((d) => mine(d, 39912)).reduce((a, d) => a + d.packets, 0)).toBeGreaterThan(0);
      expect(got.filter((d) => mine(d, 39911))).toEqual([]);
    } finally {
      probe.close();
      for (const ns of [nsA, nsB]) execFileSync('ip', ['netns', 'del', ns]);
    }
  }, 60_000);

  it('watches at most 16 interfaces, said clearly', () => {
    const probe = DropProbe.open({ maxKeys: 4 });
    try {
      expect(() => probe.watch(Array.from({ length: 17 }, (_, i) => i + 1))).toThrow(/at most 16 interfaces/);
      probe.watch(Array.from({ length: 16 }, (_, i) => i + 1));
    } finally {
      probe.close();
    }
  });

  it('a full drop map: what does not fit is counted, never lost silently', async () => {
    const probe = DropProbe.open({ maxKeys: 4 });
    try {
      probe.watch([1]);
      probe.attach();
      await probe.drain();
      const before = probe.stats().mapFull;
      sendClosed(30, 50, 38000, 10); // 10 distinct keys, 3 datagrams each
      await settle();
      const got = (await probe.drain()).filter((d) => d.dport >= 38000 && d.dport < 38010);
      expect(got.length).toBeLessThanOrEqual(4);
      const held = got.reduce((a, d) => a + d.packets, 0);
      expect(held + probe.stats().mapFull - before).toBe(30);
    } finally {
      probe.close();
    }
  });

  it('the memory budget holds what the kernel charges for the drop maps (bpftool bytes_memlock)', () => {
    const probe = DropProbe.open({ maxKeys: 16_384 });
    try {
      // What bpftool shows as bytes_memlock, read from this process's own map descriptors (other
      // processes may hold drop maps of their own right now): the probe's five maps and the two
      // of its switch barrier.
      const maps = new Map<number, number>();
      for (const fd of readdirSync('/proc/self/fdinfo')) {
        let info = '';
        try {
          info = readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8');
        } catch {
          continue;
        }
        const id = /^map_id:\s+(\d+)/m.exec(info), memlock = /^memlock:\s+(\d+)/m.exec(info);
        if (id && memlock) maps.set(Number(id[1]), Number(memlock[1]));
      }
      expect(maps.size).toBe(7);
      const charged = [...maps.values()].reduce((a, n) => a + n, 0);
      expect(dropMapBytes(16_384)).toBeGreaterThanOrEqual(charged);
      // Slack: the per-CPU counters are budgeted for 64 CPUs (4 KiB each).
      expect(dropMapBytes(16_384) - charged).toBeLessThan(64 * 1024 + 64 * 4096);
    } finally {
      probe.close();
    }
  });

  it('kill -9 of the process that attached it leaves no drop probe in the kernel', async () => {
    ensureBuilt();
    // By id: a probe closed by an earlier test may still be on its way out (freed after an RCU
    // grace period), so counting by name would race.
    const ids = (): Set<number> => new Set((JSON.parse(execFileSync('bpftool', ['-j', 'prog', 'show'], { encoding: 'utf8' })) as Array<{ id: number; name?: string }>)
      .filter((p) => p.name === 'wgflow_drop').map((p) => p.id));
    const before = ids();
    const mod = JSON.stringify(join(REPO, 'build', 'src', 'datapath', 'drops.js'));
    const child = spawn(process.execPath, ['-e', `const p=require(${mod}).DropProbe.open({maxKeys:64});p.watch([1]);p.attach();console.log('attached');setInterval(()=>{},1000)`], { stdio: ['ignore', 'pipe', 'pipe'] });
    try {
      let out = '', err = '';
      child.stderr.on('data', (d: Buffer) => (err += d.toString()));
      await new Promise<void>((resolve, reject) => {
        child.stdout.on('data', (d: Buffer) => ((out += d.toString()).includes('attached') ? resolve() : undefined));
        child.once('exit', (code) => reject(new Error(`the probe process exited (${code}) before attaching: ${err}`)));
      });
      const its = [...ids()].filter((id) => !before.has(id));
      expect(its).toHaveLength(1);
      child.kill('SIGKILL');
      await new Promise((r) => child.once('exit', r));
      // The program goes with its last reference (the link the process held), after an RCU grace
      // period: wait for it.
      let left = ids().has(its[0]);
      for (let i = 0; i < 100 && left; i++) {
        await new Promise((r) => setTimeout(r, 100));
        left = ids().has(its[0]);
      }
      expect(left, `program ${its[0]} is still loaded after the process was killed`).toBe(false);
    } finally {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    }
  }, 120_000);

  it('the daemon switch: a window reported after its interface went (SIGTERM) still names it; on after stop is refused', async () => {
    const got: FlowEvent[] = [];
    let attached = true;
    const d = new DropEvents({
      attributor: new Attributor(), sink: async (evs) => void got.push(...evs), reporterId: 'r', reporterPublicKey: '', windowMs: 60_000, maxKeys: 64,
      ifindexes: () => (attached ? [1] : []), interfaceName: (i) => (attached && i === 1 ? 'lo' : undefined), log: pino({ level: 'silent' }),
    });
    d.set(true);
    sendClosed(6, 100, 39997);
    await settle();
    attached = false; // the daemon detaches its interfaces before the last window is reported
    await d.stop();
    const mine = got.filter((e) => e.destination.port === 39997);
    expect(mine.reduce((a, e) => a + e.rxPackets, 0)).toBe(6);
    for (const e of mine) expect(e.interfaceName).toBe('lo');
    expect(() => d.set(true)).toThrow(/the daemon is stopping/);
    expect(d.state).toBe('off');
  });

  it('an object that cannot be loaded: a clear error; the daemon switch says "unavailable" and keeps the reason', () => {
    expect(() => DropProbe.open({ objectPath: '/nonexistent/wgflow_drops.bpf.o' })).toThrow(/cannot open BPF object/);
    const d = new DropEvents({
      attributor: new Attributor(), sink: async () => undefined, reporterId: 'r', reporterPublicKey: '', windowMs: 1000, maxKeys: 16,
      ifindexes: () => [1], interfaceName: String, log: pino({ level: 'silent' }), objectPath: '/nonexistent/wgflow_drops.bpf.o',
    });
    expect(() => d.set(true)).toThrow(DropsUnavailableError);
    expect(() => d.set(true)).toThrow(/DROP events are unavailable on this kernel .*Linux >= 5\.17.*cannot open BPF object/);
    expect(d.state).toBe('unavailable');
    expect(d.status()).toMatchObject({ state: 'unavailable', reason: expect.stringMatching(/cannot open BPF object/) });
    d.set(false); // off stays possible
    expect(d.state).toBe('unavailable');
  });
});

describe('drop reason names', () => {
  it('come from the running kernel and fall back to the number', () => {
    expect(dropReasonName(999_999)).toBe('REASON_999999');
  });
});
