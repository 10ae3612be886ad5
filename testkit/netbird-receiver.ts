// A flow receiver built only from a NetBird flow .proto (path given), for tests that run it in a
// network namespace: acks the initiator and every event by id, and prints one JSON line per event
// received ({"event":"ready","port":N} first). Nothing of wgflow's wire code is used.
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';

interface Ts { seconds: number; nanos: number }
interface NbEvent {
  event_id: Buffer; isInitiator: boolean; timestamp?: Ts | null; window_start?: Ts | null; window_end?: Ts | null;
  flow_fields?: Record<string, unknown> | null;
}

const protoPath = process.argv[2];
if (!protoPath) {
  process.stderr.write('usage: netbird-receiver PROTO [HOST]\n');
  process.exit(2);
}
const def = protoLoader.loadSync(protoPath, { keepCase: true, longs: Number, enums: String, defaults: true, oneofs: true });
const pkg = grpc.loadPackageDefinition(def).flow as unknown as { FlowService: { service: grpc.ServiceDefinition } };
const ms = (t: Ts | null | undefined): number | null => (t ? t.seconds * 1000 + Math.floor(t.nanos / 1e6) : null);
const server = new grpc.Server();
server.addService(pkg.FlowService.service, {
  Events: (call: grpc.ServerDuplexStream<NbEvent, { event_id?: Buffer; isInitiator?: boolean }>) => {
    call.on('data', (ev: NbEvent) => {
      if (ev.isInitiator) {
        call.write({ isInitiator: true });
        return;
      }
      const f = ev.flow_fields ?? {};
      const line = { event: 'flow', id: ev.event_id.toString('hex'), timestampMs: ms(ev.timestamp), windowStartMs: ms(ev.window_start), windowEndMs: ms(ev.window_end), ...f };
      process.stdout.write(`${JSON.stringify(line, (_k, v: unknown) => (v && typeof v === 'object' && (v as { type?: string }).type === 'Buffer' ? Buffer.from((v as { data: number[] }).data).toString('hex') : v))}\n`);
      call.write({ event_id: ev.event_id });
    });
    call.on('end', () => call.end());
    call.on('error', () => undefined);
  },
});
server.bindAsync(`${process.argv[3] ?? '127.0.0.1'}:0`, grpc.ServerCredentials.createInsecure(), (err, port) => {
  if (err) {
    process.stderr.write(`netbird-receiver: ${err.message}\n`);
    process.exit(1);
  }
  process.stdout.write(`${JSON.stringify({ event: 'ready', port })}\n`);
});
