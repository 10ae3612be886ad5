// Structured logs: pino JSON on stderr, human-readable when stderr is a terminal.
import pino, { Logger } from 'pino';

export type LogLevel = 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'fatal';

export function createLogger(level: LogLevel = 'info', name = 'wgflow'): Logger {
  if (process.stderr.isTTY) {
    return pino({ name, level, transport: { target: 'pino-pretty', options: { destination: 2, colorize: true, translateTime: 'SYS:HH:MM:ss.l' } } });
  }
  return pino({ name, level }, pino.destination({ fd: 2, sync: false }));
}
