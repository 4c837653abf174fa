// The GPU busy sampler against a stand-in nvidia-smi (a script printing rounds of per-GPU lines as the real one
// does with -lms): the busiest GPU of each round counts, laps split the samples, a missing command gives no sampler.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { GpuBusySampler, parseSmiLine, summarize } from '../../../src/engine/compute/gpu_busy';

test('parseSmiLine reads "utilization, memory" lines and nothing else', () => {
  assert.deepEqual(parseSmiLine('87, 37538'), { busy: 87, memMiB: 37538 });
  assert.deepEqual(parseSmiLine(' 0 , 512 '), { busy: 0, memMiB: 512 });
  assert.equal(parseSmiLine('[N/A], 512'), null);
  assert.equal(parseSmiLine('utilization.gpu [%], memory.used [MiB]'), null);
  assert.equal(summarize([]), null);
  assert.deepEqual(
    summarize([
      { busy: 50, memMiB: 10 },
      { busy: 100, memMiB: 30 },
    ]),
    { busy: 75, peakMemMiB: 30, samples: 2 },
  );
});

/** A stand-in nvidia-smi for two GPUs: GPU 0 idle, GPU 1 busy `$BUSY` % (the value in file `level`). */
function fakeSmi(): { cmd: string; level: string } {
  const dir = mkdtempSync(join(tmpdir(), 'smi-'));
  const level = join(dir, 'level'),
    cmd = join(dir, 'nvidia-smi');
  writeFileSync(level, '40\n');
  writeFileSync(
    cmd,
    `#!/bin/bash
round() { echo "3, 100"; echo "$(cat ${level}), 2000"; }
case " $* " in *" -lms "*) while true; do round; sleep 0.02; done ;; *) round ;; esac
`,
  );
  chmodSync(cmd, 0o755);
  return { cmd, level };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

test('the sampler takes the busiest GPU per round and splits samples by lap', async () => {
  const { cmd, level } = fakeSmi();
  const s = await GpuBusySampler.start(20, [cmd]);
  assert.ok(s, 'a sampler when the command runs');
  try {
    await sleep(400);
    const a = s.lap();
    assert.ok(a && a.samples >= 3, `samples in the first lap: ${a?.samples}`);
    assert.equal(a.busy, 40); // GPU 1's 40 %, not the mean with idle GPU 0
    assert.equal(a.peakMemMiB, 2000);
    writeFileSync(level, '90\n');
    await sleep(300);
    s.lap(); // the change lands somewhere in this lap
    await sleep(300);
    const c = s.lap();
    assert.ok(c && c.samples >= 3);
    assert.equal(c.busy, 90);
  } finally {
    const all = s.stop();
    assert.ok(all && all.busy > 40 && all.busy < 90, `whole run between the laps' levels: ${all?.busy}`);
  }
});

test('no sampler where the command does not run', async () => {
  assert.equal(await GpuBusySampler.start(20, [join(tmpdir(), 'no-such-nvidia-smi')]), null);
  assert.equal(await GpuBusySampler.start(20, ['false']), null);
});
