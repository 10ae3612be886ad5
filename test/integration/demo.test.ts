// The demo runs to completion without a terminal, prints events, and leaves nothing behind.
import { expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { describePrivileged } from '../helpers/env';
import { wgflow } from '../helpers/daemon';
import { budget } from '../../testkit/slow';

describePrivileged('wgflow demo', () => {
  it('runs for a few seconds, shows START and END events with resources and policies, cleans up', () => {
    const before = execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' });
    // 8 s here; longer where starting a process is slow (the emulated VM), so that the demo's
    // later steps (ICMPv6) still happen before it ends.
    const r = wgflow(['demo', '--duration', String(Math.min(60, Math.max(8, Math.ceil(budget(8000) / 1000))))], { timeoutMs: 90_000 });
    expect(r.code, r.stderr + r.stdout).toBe(0);
    expect(r.stdout).toMatch(/^TIME +TYPE +DIR +SOURCE +DESTINATION +PROTO\/PORT +BYTES ↑ \/ ↓ +RESOURCE +POLICY$/m);
    expect(r.stdout).toMatch(/ START +in +alice-laptop \(10\.\d+\.0\.1\) +database \(192\.168\.\d+\.10\) +tcp\/8080 +database +staff to database/);
    // The connection may close with FIN or RST (as it happened on the wire); either ends the flow.
    expect(r.stdout).toMatch(/ END tcp_(fin|rst) +in +alice-laptop .* tcp\/8080 +[\d.]+ KiB ↑ [\d.]+ KiB ↓ +database +staff to database/);
    expect(r.stdout).toMatch(/icmpv6 128\/0/);
    expect(r.stdout).toMatch(/demo: events: START \d+, END \d+/);
    expect(r.stdout).toMatch(/demo: cleaned up\n$/);
    expect(execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' })).toBe(before);
  }, 120_000);
});
