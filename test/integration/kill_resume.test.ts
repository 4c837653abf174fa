// Crash safety: the engine is killed with SIGKILL at seeded random points of a tiny-model LoPRo run
// (after a random number of progress lines plus a random delay, so kills land inside forward
// passes, layer quantization and checkpoint writes alike) and resumed with --resume each time.
// The final native model must be byte-identical to an uninterrupted run's (which, in addition,
// kept its activations on disk instead of in memory, and quantized on the engine's own thread while
// the killed runs use two CPU-backend workers). All runs take the GPU pipeline's device paths
// (LOPRO_TEST_DEVICE_PATHS=1: Hessian sums finished on the "device"; batches "uploaded" once per block,
// outputs kept as the next block's inputs — on the CPU EP the same code with host tensors), except that
// the reference's activation upload fails as a full device would, so it keeps them on the host: the hash
// also shows that the device activation path computes the same bytes as the per-pass host path.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { RunDir } from '../../src/engine/run/rundir';
import { rng, runCli, sha256, spawnCli, tmp, SMALL, TINY, TRAIN } from './helpers';

const ARGS = ['quantize', TINY, '--method', 'lopro', '--bits', '2', '--calib', TRAIN, ...SMALL];

const DEVICE_PATHS = { LOPRO_TEST_DEVICE_PATHS: '1' };
/** The killed and resumed runs: device activations, two worker threads. */
const KILLED = ['--threads', '2'];

/** Runs until `lines` progress lines were printed, then waits `delayMs` and SIGKILLs. Resolves with the exit code (null when killed). */
function runAndKill(args: string[], lines: number, delayMs: number): Promise<number | null> {
  return new Promise((resolve) => {
    const child = spawnCli(args, DEVICE_PATHS);
    let seen = 0,
      armed = false;
    child.stderr!.on('data', (d: Buffer) => {
      seen += d
        .toString()
        .split('\n')
        .filter((l) => l.startsWith('[')).length;
      if (!armed && seen >= lines) {
        armed = true;
        setTimeout(() => child.kill('SIGKILL'), delayMs);
      }
    });
    child.stdout!.resume();
    child.on('exit', (code) => resolve(code));
  });
}

test('SIGKILL at random points + --resume gives the same bytes as an uninterrupted run', async (t) => {
  const base = tmp('kill');
  const ref = join(base, 'ref');
  // The reference run spills its calibration activations to disk (0.1 MiB budget < 2 × 4·64·256·4 B):
  // the comparison then also shows that spilling changes no output byte.
  const r = runCli([...ARGS, '--out', ref, '--memory-budget-mb', '0.1', '--threads', '1'], { ...DEVICE_PATHS, LOPRO_FAIL_UPLOAD_SCOPE: 'activations' });
  assert.match(r.stderr, /spilled to/);
  // A budget below the floor is said, with the floor, once.
  assert.equal(r.stderr.match(/memoryBudgetMB 0\.1 is below this model's floor of about \d+ MiB/g)?.length, 1, r.stderr);
  assert.match(r.stderr, /calibration activations do not fit on the cpu device/);
  assert.equal(r.code, 0, r.stderr);
  const refHash = sha256(join(ref, 'native', 'model.safetensors'));

  const out = join(base, 'killed');
  const rand = rng(20261122);
  let kills = 0;
  const states: number[] = [];
  for (let attempt = 0; attempt < 5; attempt++) {
    // 13 progress lines per block (5 passes + 7 layers + done): killing after 2–25 lines of each
    // session lands the kills inside a block or just after its commit, and moves on 0–2 blocks.
    const code = await runAndKill([...ARGS, ...KILLED, '--out', out, ...(attempt > 0 ? ['--resume'] : [])], 2 + Math.floor(rand() * 24), Math.floor(rand() * 400));
    if (code === 0) break;
    kills++;
    states.push(new RunDir(out).exists() ? JSON.parse(readFileSync(join(out, 'run.json'), 'utf8')).completedBlocks : -1);
  }
  const fin = runCli([...ARGS, ...KILLED, '--out', out, '--resume'], DEVICE_PATHS);
  assert.equal(fin.code, 0, fin.stderr);
  assert.match(fin.stderr, /calibration activations kept on the cpu device/);
  assert.ok(kills >= 2, `only ${kills} kills landed (states ${states.join(',')})`);
  assert.ok(existsSync(join(out, 'native', 'model.safetensors')));
  t.diagnostic(`${kills} kills, completed blocks at each kill: ${states.join(', ')}`);
  assert.equal(sha256(join(out, 'native', 'model.safetensors')), refHash, `after kills at completed-block states ${states.join(',')}`);
  assert.deepEqual(
    new RunDir(out).tempFiles().filter((f) => !f.includes(`${join(out, 'scratch')}`)),
    [],
    'no temp file survives a resumed run',
  );
});
