// A quantization run through the engine's IPC entry, exactly as the VS Code extension starts it
// (extension/engineClient.ts: fork with advanced serialization, LOPRO_ENGINE_IPC=1, the engine
// environment of protocol/engine_env.ts, `run/start` with a full QuantizeConfig): so that a run from VS Code
// can be timed against the same run from the CLI.
//
//   node --import tsx bench/ipc_run.ts <engine.js> <model> --out DIR [config flags as the CLI takes them]
//   e.g. node .gpu/bench/ipc_run.js .gpu/bench/lopro.js /tmp/s7 --out /tmp/pg/s7ipc --method lopro --bits 2 --ctx 512 --calib fixtures/text/train.txt --ep webgpu

import { fork } from 'node:child_process';
import { resolve } from 'node:path';
import { Connection, type Envelope, type Transport } from '../src/protocol/rpc';
import type { EngineNotifications, EngineRequests } from '../src/protocol/messages';
import { engineEnv } from '../src/protocol/engine_env';
import { configFromFlags, parseArgs } from '../src/engine/run/args';

type Served = { [K in keyof EngineRequests]: EngineRequests[K] };
type Notes = { [K in keyof EngineNotifications]: EngineNotifications[K] };

async function main(): Promise<void> {
  const [engine, model, ...rest] = process.argv.slice(2);
  const a = parseArgs(rest, new Set(), new Set(['out']));
  const out = a.flags.get('out')?.[0];
  if (!engine || !model || !out) throw new Error('usage: ipc_run <engine.js> <model> --out DIR [config flags]');
  const config = configFromFlags(a.config);
  const t0 = performance.now();
  // execArgv []: the engine bundle runs as the extension starts it, not under this script's loader (tsx).
  const child = fork(resolve(engine), [], {
    serialization: 'advanced',
    execArgv: [],
    env: { ...engineEnv(process.env), LOPRO_ENGINE_IPC: '1' },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  const transport: Transport = {
    send: (m: Envelope) => void child.send(m),
    onMessage: (l) => void child.on('message', l),
    onClose: (l) => void child.on('exit', (code, sig) => l(`engine exited (${code ?? sig})`)),
  };
  const conn = new Connection<Record<string, never>, Served, Notes>(transport);
  conn.onNotification('log', ({ level, message }) => process.stderr.write(`[engine ${level}] ${message}\n`));
  conn.onNotification('progress', ({ value }) => {
    if (value.kind !== 'report' || value.percentage === undefined) return;
    process.stderr.write(`[${value.percentage.toFixed(1).padStart(5)}%] ${value.message ?? ''}\n`);
  });
  try {
    const summary = await conn.sendRequest('run/start', { modelPath: resolve(model), config, runDir: resolve(out), resume: false });
    const wall = (performance.now() - t0) / 1000;
    process.stdout.write(
      `ipc run: ${summary.layers.length} layers, ${summary.bpw.toFixed(3)} bpw, backend ${summary.backend}, EP ${summary.ep}; run.json ${summary.seconds.toFixed(1)} s, wall (fork to result) ${wall.toFixed(1)} s\n`,
    );
  } finally {
    conn.close('done');
    child.kill();
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
