// The test and benchmark kit's processes and witnesses (testkit/), for the tests.
export * from '../../testkit/witness';
