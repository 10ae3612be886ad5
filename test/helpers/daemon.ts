// The daemon helper lives in the test kit (testkit/) so that benchmarks can use it too.
export { DaemonProc, teardown, TRAFFIC, WGFLOW, wgflow } from '../../testkit/daemon';
export type { CliResult } from '../../testkit/daemon';
