// Worker mode: the engine as the extension host's child process. The host forks dist/engine.js
// with `serialization: 'advanced'` (structured clone: typed arrays cross without JSON) and
// LOPRO_ENGINE_IPC=1; both ends speak src/protocol/rpc.ts `Connection`. When the host goes away
// (disconnect), running requests are aborted and the process exits.

import type { Envelope, Transport } from '../protocol/rpc';
import { Connection } from '../protocol/rpc';
import { registerEngineHandlers, type EngineConnection } from './run/handlers';

export type { EngineConnection };

/** A Transport over this process's IPC channel (process.send / 'message' / 'disconnect'). */
export function processIpcTransport(proc: NodeJS.Process = process): Transport {
  return {
    send: (m: Envelope) => {
      if (!proc.connected || !proc.send) throw new Error('IPC channel closed');
      proc.send(m);
    },
    onMessage: (listener) => void proc.on('message', listener),
    onClose: (listener) => void proc.on('disconnect', () => listener('host disconnected')),
  };
}

export function runWorker(): void {
  const conn: EngineConnection = new Connection(processIpcTransport());
  conn.onInvalid = (_raw, why) => conn.sendNotification('log', { level: 'warn', message: `engine dropped a message (${why})` });
  registerEngineHandlers(conn);
  process.on('disconnect', () => {
    conn.close('host disconnected');
    // Let aborted handlers unwind (temp files removed) before leaving.
    setTimeout(() => process.exit(0), 500).unref();
  });
  process.on('uncaughtException', (e) => {
    try {
      conn.sendNotification('log', { level: 'error', message: `engine uncaught exception: ${e.stack ?? e.message}` });
    } finally {
      process.exit(70);
    }
  });
}
