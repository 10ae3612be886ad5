// Packaging checks CI can run: the Vagrantfile validates offline, the systemd unit is well formed.
import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { REPO } from '../helpers/env';

describe('packaging', () => {
  it('vagrant validate --ignore-provider accepts the Vagrantfile', () => {
    const r = spawnSync('vagrant', ['validate', '--ignore-provider'], { cwd: REPO, encoding: 'utf8', env: { ...process.env, VAGRANT_CHECKPOINT_DISABLE: '1' } });
    expect(r.status, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toContain('Vagrantfile validated successfully');
  });

  it('the systemd unit grants only CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN and restarts on failure', () => {
    const unit = readFileSync(join(REPO, 'packaging', 'wgflow.service'), 'utf8');
    expect(unit).toMatch(/^AmbientCapabilities=CAP_BPF CAP_PERFMON CAP_NET_ADMIN$/m);
    expect(unit).toMatch(/^CapabilityBoundingSet=CAP_BPF CAP_PERFMON CAP_NET_ADMIN$/m);
    expect(unit).toMatch(/^User=wgflow$/m);
    expect(unit).toMatch(/^Restart=on-failure$/m);
    expect(unit).toMatch(/^ExecStart=\/opt\/wgflow\/bin\/wgflow run --config \/etc\/wgflow\/config.yaml$/m);
    const v = spawnSync('systemd-analyze', ['verify', '--man=no', join(REPO, 'packaging', 'wgflow.service')], { encoding: 'utf8' });
    if (v.error === undefined && v.status !== null) {
      // Only complain about the unit itself, not about /opt/wgflow missing on this machine.
      expect(v.stderr.split('\n').filter((l) => l && !l.includes('/opt/wgflow') && !l.includes('Command ') && !l.includes('not executable'))).toEqual([]);
    }
  });
});
