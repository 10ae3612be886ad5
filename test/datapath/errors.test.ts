// The wrapper's error paths: every failure is a DatapathError with a code and an actionable message.
import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { Datapath, DatapathError } from '../../src/datapath/datapath';
import { AUTO_MODE, describePrivileged, spawnAsNobody } from '../helpers/env';

describe('datapath option validation', () => {
  it.each([
    [{ maxFlows: 0 }, /maxFlows must be an integer from 1/],
    [{ maxFlows: 1.5 }, /maxFlows must be an integer/],
    [{ maxFlowsV6: -1 }, /maxFlowsV6 must be an integer/],
    [{ ringBytes: 1000 }, /ringBytes must be an integer from 4096/],
    [{ ringBytes: 12288 }, /ringBytes must be a power of two/],
  ])('rejects %j', (opts, msg) => {
    expect(() => Datapath.open(opts)).toThrow(msg);
    try {
      Datapath.open(opts);
    } catch (err) {
      expect(err).toBeInstanceOf(DatapathError);
      expect((err as DatapathError).code).toBe('EINVAL');
    }
  });
});

describePrivileged('datapath errors from the kernel and the system', () => {
  it('a missing BPF object names the file', () => {
    expect(() => Datapath.open({ objectPath: '/nonexistent/wgflow.bpf.o' })).toThrow(/cannot open BPF object \/nonexistent\/wgflow.bpf.o.*ENOENT/s);
  });

  it('an unknown interface is named, with ENODEV', () => {
    const dp = Datapath.open();
    try {
      expect(() => dp.attach('wgf-missing0')).toThrow(/interface wgf-missing0 does not exist/);
      try {
        dp.attach('wgf-missing0');
      } catch (err) {
        expect((err as DatapathError).code).toBe('ENODEV');
      }
    } finally {
      dp.close();
    }
  });

  it('a closed datapath says so', () => {
    const dp = Datapath.open();
    dp.close();
    expect(() => dp.stats()).toThrow(/closed/);
    expect(() => dp.setCounting(false)).toThrow(/closed/);
  });

  it('without privileges, loading names the capabilities it needs', () => {
    const script = (repo: string): string => `
      const { Datapath } = require('${repo}/dist/datapath/datapath.js');
      try { Datapath.open(); console.log('opened'); } catch (e) { console.log(e.code + ': ' + e.message.split('\\n')[0]); }`;
    const r = spawnAsNobody(null, (repo) => ['node', '-e', script(repo)]);
    expect(r.stdout).toMatch(/^EPERM: loading the BPF programs failed; wgflow needs root or the capabilities CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN/);
  });

  it('CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN are enough, without root (what the systemd unit grants)', () => {
    const veth = `wgfcap${process.pid % 10000}`;
    spawnSync('ip', ['link', 'add', veth, 'type', 'veth', 'peer', 'name', `${veth}p`]);
    try {
      const script = (repo: string): string => `
        const { Datapath } = require('${repo}/dist/datapath/datapath.js');
        const dp = Datapath.open();
        const modes = [dp.attach('${veth}').mode];
        dp.detach('${veth}');
        modes.push(dp.attach('${veth}', 'clsact').mode);
        dp.detach('${veth}');
        dp.close();
        console.log(modes.join(','));`;
      const caps = '+bpf,+perfmon,+net_admin';
      const r = spawnAsNobody(caps, (repo) => ['node', '-e', script(repo)]);
      expect(r.stderr).toBe('');
      expect(r.stdout.trim()).toBe(`${AUTO_MODE},clsact`);
    } finally {
      spawnSync('ip', ['link', 'del', veth]);
    }
  });

  it('pinned maps of another size are refused with a way out', () => {
    const dir = `/sys/fs/bpf/wgflow-test-${process.pid}`;
    const first = Datapath.open({ pinDir: dir, maxFlows: 1024 });
    try {
      expect(() => Datapath.open({ pinDir: dir, maxFlows: 2048 })).toThrow(/pinned in .* have another size or layout: remove them/);
      const again = Datapath.open({ pinDir: dir, maxFlows: 1024 });
      again.close();
    } finally {
      first.close();
      spawnSync('rm', ['-rf', dir]);
    }
  });
});
