// The record layout shared by the kernel and user space is defined once, in bpf/wgflow.h: every
// size and offset the TypeScript decoders use (src/datapath/records.ts, LAYOUT) must equal what
// the compiler makes of the header (offsetof/sizeof, exported by the native addon).
import { constants } from 'node:os';
import { describe, expect, it } from 'vitest';
import { LAYOUT } from '../../src/datapath/records';
import { loadNative } from '../../src/util/addon';

describe('bpf/wgflow.h against src/datapath/records.ts', () => {
  it('every struct size and field offset agrees with the compiled header', () => {
    const compiled = loadNative().layout;
    expect(Object.keys(compiled).sort()).toEqual(Object.keys(LAYOUT).sort());
    for (const [struct, fields] of Object.entries(LAYOUT)) expect(compiled[struct], struct).toEqual(fields);
  });

  it('the addon names every errno (ENOSYS reaches the "no BPF support" hint)', () => {
    const native = loadNative();
    for (const name of ['ENOSYS', 'EPERM', 'EACCES', 'EOPNOTSUPP', 'EMFILE'] as const) expect(native.errnoName(constants.errno[name])).toBe(name);
  });
});
