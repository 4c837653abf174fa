// Shared helpers of the engine integration tests: run the CLI as a child process, fork the engine
// in worker mode, generate small seeded checkpoints. Small settings keep the suite fast on 2 cores:
// the tiny model with 4 calibration windows of 64 tokens (the protocol's 128 × 256 is for benches).

import { spawn, spawnSync, fork, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { Connection, type Envelope, type Transport } from '../../src/protocol/rpc';
import type { EngineNotifications, EngineRequests } from '../../src/protocol/messages';
import { writeSafetensorsAtomic } from '../../src/engine/io/safetensors_writer';
import { rng } from '../unit/io/helpers';

export const ROOT = resolve(__dirname, '../..');
export const MAIN = join(ROOT, 'src/engine/main.ts');
export const TINY = join(ROOT, 'fixtures/tiny');
export const TRAIN = join(ROOT, 'fixtures/text/train.txt');
export const PERSUASION = join(ROOT, 'fixtures/text/persuasion.txt');
/** Calibration settings of the integration tests (documented above). */
export const SMALL = ['--samples', '4', '--ctx', '64', '--ep', 'cpu'];

export function tmp(prefix: string): string {
  return mkdtempSync(join(tmpdir(), `lopro-it-${prefix}-`));
}

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

export function runCli(args: string[], env: Record<string, string> = {}): CliResult {
  const r = spawnSync(process.execPath, ['--import', 'tsx', MAIN, ...args], {
    cwd: ROOT,
    encoding: 'utf8',
    env: { ...process.env, LOPRO_ENGINE_IPC: '', ...env },
    timeout: 170_000,
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** Starts the CLI without waiting (for kill tests). */
export function spawnCli(args: string[], env: Record<string, string> = {}): ChildProcess {
  return spawn(process.execPath, ['--import', 'tsx', MAIN, ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, LOPRO_ENGINE_IPC: '', ...env } });
}

export function sha256(file: string): string {
  return createHash('sha256').update(readFileSync(file)).digest('hex');
}

/** Deterministic PRNG (mulberry32), shared with the unit tests. */
export { rng };

/** A bare safetensors file: a few seeded F32 matrices (odd shapes included) and a 1-D tensor. */
export function makeBareCheckpoint(file: string, seed = 1): { name: string; rows: number; cols: number; data: Float32Array }[] {
  const r = rng(seed);
  const mats = [
    { name: 'enc.0.weight', rows: 48, cols: 128 },
    { name: 'enc.1.weight', rows: 33, cols: 200 },
    { name: 'head.weight', rows: 16, cols: 64 },
  ].map((m) => ({ ...m, data: Float32Array.from({ length: m.rows * m.cols }, () => (r() + r() + r() - 1.5) * 0.2) }));
  writeSafetensorsAtomic(file, [
    ...mats.map((m) => ({ name: m.name, dtype: 'F32' as const, shape: [m.rows, m.cols], data: m.data })),
    { name: 'enc.0.bias', dtype: 'F32', shape: [48], data: new Float32Array(48).fill(0.5) },
  ]);
  return mats;
}

type Served = { [K in keyof EngineRequests]: EngineRequests[K] };
type Notes = { [K in keyof EngineNotifications]: EngineNotifications[K] };
export type HostConnection = Connection<Record<string, never>, Served, Notes>;

/** Forks the engine in worker mode exactly as the extension host does (IPC, advanced serialization). */
export function forkEngine(): { child: ChildProcess; conn: HostConnection } {
  const child = fork(MAIN, [], {
    cwd: ROOT,
    execArgv: ['--import', 'tsx'],
    serialization: 'advanced',
    env: { ...process.env, LOPRO_ENGINE_IPC: '1' },
    stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
  });
  const transport: Transport = {
    send: (m: Envelope) => void child.send(m),
    onMessage: (l) => void child.on('message', l),
    onClose: (l) => void child.on('exit', (code, sig) => l(`engine exited (${code ?? sig})`)),
  };
  return { child, conn: new Connection(transport) };
}
