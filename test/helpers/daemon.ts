// The daemon helper lives in src/testbed so that benchmarks can use it too.
export { DaemonProc, TRAFFIC, WGFLOW, wgflow } from '../../src/testbed/daemon';
export type { CliResult } from '../../src/testbed/daemon';
