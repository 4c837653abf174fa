// The run lock guards every writer of a run folder, not only `lopro quantize`: an export, a layer
// re-quantize and an apply are refused while another live process holds run.lock, naming its pid; a lock
// whose process is gone is taken over.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { applyCandidate, requantizeLayer } from '../../src/engine/run/requantize';
import { runCli, SMALL, tmp, TINY, TRAIN } from './helpers';

test('export, layer re-quantize and apply wait for the run lock of another process', async () => {
  const dir = tmp('lock');
  const run = join(dir, 'run');
  assert.equal(runCli(['quantize', TINY, '--calib', TRAIN, ...SMALL, '--method', 'gptq', '--bits', '4', '--out', run, '--quiet']).code, 0);
  const layer = 'model.layers.1.mlp.down_proj';
  const { candidateId } = await requantizeLayer(run, layer, { bits: 3 });
  const holder = spawn('sleep', ['60']);
  try {
    writeFileSync(join(run, 'run.lock'), String(holder.pid));
    const held = new RegExp(`in use by another engine process \\(pid ${holder.pid}\\)`);
    const r = runCli(['export', run, '--format', 'native', '--out', join(dir, 'exp')]);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, held);
    assert.equal(existsSync(join(dir, 'exp')), false);
    await assert.rejects(requantizeLayer(run, layer, { bits: 2 }), held);
    const before = readFileSync(join(run, 'run.json'), 'utf8');
    await assert.rejects(applyCandidate(run, layer, candidateId), held);
    assert.equal(readFileSync(join(run, 'run.json'), 'utf8'), before, 'run.json untouched');
    const q = runCli(['quantize', TINY, '--calib', TRAIN, ...SMALL, '--method', 'gptq', '--bits', '4', '--out', run, '--resume']);
    assert.equal(q.code, 2);
    assert.match(q.stderr, held);
  } finally {
    holder.kill('SIGKILL');
    await new Promise((r) => holder.once('exit', r));
  }
  // The holder is gone: its stale lock is taken over, and each writer releases the lock when done.
  const s = await applyCandidate(run, layer, candidateId);
  assert.equal(s.layers.find((l) => l.name === layer)?.config.bits, 3);
  assert.equal(runCli(['export', run, '--format', 'native', '--out', join(dir, 'exp')]).code, 0);
  assert.equal(existsSync(join(run, 'run.lock')), false);
});

test('export of a folder that is not a run names it and writes nothing into it', () => {
  const dir = tmp('lock-none');
  const r = runCli(['export', join(dir, 'nowhere'), '--format', 'native', '--out', join(dir, 'exp')]);
  assert.equal(r.code, 2, r.stderr);
  assert.equal(existsSync(join(dir, 'nowhere')), false);
});
