import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // Engine events compare by all their fields, lazily made ones included.
    setupFiles: ['test/setup/equality.ts'],
    // Privileged tests share one kernel (namespaces, wireguard-go sockets): run files one at a time.
    fileParallelism: false,
    testTimeout: 60_000,
    hookTimeout: 60_000,
    pool: 'forks',
  },
});
