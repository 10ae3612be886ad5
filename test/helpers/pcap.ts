// The pcap reader of the test kit (testkit/pcap.ts), for the tests.
export * from '../../testkit/pcap';
