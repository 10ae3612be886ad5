// The frame builders live in the test kit (testkit/) so that benchmarks can use them too.
export * from '../../testkit/packets';
