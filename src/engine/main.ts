// The single engine bundle (dist/engine.js). Forked by the extension host with an IPC channel and
// LOPRO_ENGINE_IPC=1 → worker mode (a protocol Connection over process IPC); otherwise the CLI
// (bin/lopro requires this file).

import { runWorker } from './worker';
import { runCli } from './cli';
import { engineEnv } from './env';

if (typeof process.send === 'function' && engineEnv().engineIpc) {
  runWorker();
} else {
  runCli(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code;
    },
    (e: unknown) => {
      // runCli reports every error itself; this is the last resort for a bug in that reporting.
      console.error(`lopro: internal error: ${e instanceof Error ? e.message : String(e)}`);
      process.exitCode = 1;
    },
  );
}
