// Bearer token checks, TLS and mTLS round trips with certificates made here with the openssl CLI.
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { syntheticEventId } from '../../testkit/synthetic';
import { cleanup, collectedCount, ensureBuilt, exactlyOnce, killAll, senderDone, SenderOptions, startCollector, startSender as startAnySender, tmpDir } from './helpers';

const dirs: string[] = [];
const newDir = (p: string): string => {
  const d = tmpDir(p);
  dirs.push(d);
  return d;
};
const ids = (seed: string, n: number): string[] => Array.from({ length: n }, (_, i) => syntheticEventId(seed, i));
const clean = { missing: [], duplicated: [], unexpected: [] };

let pki: string;
const pem = (name: string): string => join(pki, name);

/** A CA, a server certificate for 127.0.0.1/localhost and a client certificate, all signed by the CA. */
function makePki(dir: string): void {
  const ossl = (...args: string[]): void => {
    execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
  };
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  ossl('req', '-x509', ...ec, '-keyout', 'ca.key', '-out', 'ca.crt', '-days', '2', '-subj', '/CN=wgflow test CA');
  writeFileSync(join(dir, 'server.ext'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n');
  writeFileSync(join(dir, 'client.ext'), 'extendedKeyUsage=clientAuth\n');
  for (const who of ['server', 'client']) {
    ossl('req', ...ec, '-keyout', `${who}.key`, '-out', `${who}.csr`, '-subj', `/CN=wgflow test ${who}`);
    ossl('x509', '-req', '-in', `${who}.csr`, '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-out', `${who}.crt`, '-days', '2', '-extfile', `${who}.ext`);
  }
  // A second, unrelated CA: certificates it signs must be refused.
  ossl('req', '-x509', ...ec, '-keyout', 'other-ca.key', '-out', 'other-ca.crt', '-days', '2', '-subj', '/CN=other CA');
}

beforeAll(() => {
  ensureBuilt();
  pki = newDir('pki');
  makePki(pki);
}, 120_000);
afterAll(async () => {
  await killAll();
  cleanup(...dirs);
});

// Every case runs with both exporter transports.
describe.each(['http2', 'grpc-js'])('%s transport', (transport) => {
  const startSender = (o: SenderOptions) => startAnySender({ ...o, extra: [...(o.extra ?? []), '--transport', transport] });

  describe('bearer token', () => {
    it('the right token is accepted', async () => {
      const out = newDir('tok-out');
      const c = await startCollector(out, 0, ['--token', 's3cret-token']);
      const s = startSender({ collector: c.url, spool: newDir('tok-spool'), count: 200, seed: 'tok', extra: ['--token', 's3cret-token'] });
      expect(await senderDone(s)).toMatchObject({ ok: true, acked: 200 });
      expect(exactlyOnce(out, ids('tok', 200))).toEqual(clean);
      await c.proc.kill('SIGTERM');
    });

    it('a wrong or missing token is rejected with UNAUTHENTICATED and nothing is written', async () => {
      const out = newDir('badtok-out');
      const c = await startCollector(out, 0, ['--token', 's3cret-token']);
      const wrong = startSender({ collector: c.url, spool: newDir('badtok-spool'), count: 20, seed: 'bad', extra: ['--token', 'nope', '--timeout-ms', '2500'] });
      const missing = startSender({ collector: c.url, spool: newDir('notok-spool'), count: 20, seed: 'none', extra: ['--timeout-ms', '2500'] });
      for (const s of [wrong, missing]) {
        expect(await senderDone(s)).toMatchObject({ ok: false, acked: 0, queued: 20 });
        expect((await s.exited).code).toBe(1);
        expect(s.stderr).toMatch(/collector rejected the token \(UNAUTHENTICATED\)/);
      }
      expect(collectedCount(out)).toBe(0);
      await c.proc.waitFor(() => /bad bearer token/.test(c.proc.stderr), 'the rejection log line');
      await c.proc.kill('SIGTERM');
    });
  });

  describe('TLS', () => {
    it('grpcs:// round trip with a custom CA', async () => {
      const out = newDir('tls-out');
      const c = await startCollector(out, 0, ['--tls-cert', pem('server.crt'), '--tls-key', pem('server.key')]);
      const url = `grpcs://127.0.0.1:${c.port}`;
      const s = startSender({ collector: url, spool: newDir('tls-spool'), count: 500, seed: 'tls', extra: ['--ca-file', pem('ca.crt')] });
      expect(await senderDone(s)).toMatchObject({ ok: true, acked: 500 });
      expect(exactlyOnce(out, ids('tls', 500))).toEqual(clean);
      // Not trusting the collector's CA: no connection, nothing delivered.
      const untrusted = startSender({ collector: url, spool: newDir('tls-untrusted'), count: 5, seed: 'untrusted', extra: ['--ca-file', pem('other-ca.crt'), '--timeout-ms', '2500'] });
      expect(await senderDone(untrusted)).toMatchObject({ ok: false, acked: 0 });
      // Plaintext against a TLS collector fails too.
      const plain = startSender({ collector: c.url, spool: newDir('tls-plain'), count: 5, seed: 'plain', extra: ['--timeout-ms', '2500'] });
      expect(await senderDone(plain)).toMatchObject({ ok: false, acked: 0 });
      expect(collectedCount(out)).toBe(500);
      await c.proc.kill('SIGTERM');
    });

    it('mTLS: a client certificate from the CA is required', async () => {
      const out = newDir('mtls-out');
      const c = await startCollector(out, 0, ['--tls-cert', pem('server.crt'), '--tls-key', pem('server.key'), '--client-ca', pem('ca.crt'), '--token', 't0k']);
      const url = `grpcs://127.0.0.1:${c.port}`;
      const s = startSender({ collector: url, spool: newDir('mtls-spool'), count: 500, seed: 'mtls', extra: ['--ca-file', pem('ca.crt'), '--cert', pem('client.crt'), '--key', pem('client.key'), '--token', 't0k'] });
      expect(await senderDone(s)).toMatchObject({ ok: true, acked: 500 });
      expect(exactlyOnce(out, ids('mtls', 500))).toEqual(clean);
      const noCert = startSender({ collector: url, spool: newDir('mtls-nocert'), count: 5, seed: 'nocert', extra: ['--ca-file', pem('ca.crt'), '--token', 't0k', '--timeout-ms', '2500'] });
      expect(await senderDone(noCert)).toMatchObject({ ok: false, acked: 0 });
      expect(collectedCount(out)).toBe(500);
      await c.proc.kill('SIGTERM');
    });
  });
});
