// The frame builders live in src/testbed so that benchmarks can use them too.
export * from '../../src/testbed/packets';
