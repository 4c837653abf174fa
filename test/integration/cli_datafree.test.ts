// The CLI on a bare safetensors file (data-free mode, H = I): RTN and GPTQ, a progress line per
// tensor, the native output loads back, and --resume of a finished run does no work.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { makeBareCheckpoint, runCli, tmp } from './helpers';
import { openNativeModel } from '../../src/engine/run/native';

for (const method of ['rtn', 'gptq'] as const) {
  test(`lopro quantize <file.safetensors> --method ${method} (data-free)`, () => {
    const dir = tmp(`df-${method}`);
    const file = join(dir, 'w.safetensors');
    const mats = makeBareCheckpoint(file);
    const out = join(dir, 'run');
    const r = runCli(['quantize', file, '--method', method, '--bits', '4', '--group', '32', '--out', out]);
    assert.equal(r.code, 0, r.stderr);
    // One progress line per 2-D tensor (the 1-D bias is left alone).
    const lines = r.stderr.split('\n').filter((l) => /tensor \d+\/3 /.test(l));
    assert.equal(lines.length, 3, r.stderr);
    for (const m of mats) assert.ok(r.stdout.includes(m.name.replace(/\.weight$/, '')), r.stdout);
    const nat = openNativeModel(join(out, 'native'));
    try {
      assert.deepEqual(nat.layers.sort(), mats.map((m) => m.name.replace(/\.weight$/, '')).sort());
      for (const m of mats) {
        const q = nat.readFloat32(m.name);
        let err = 0,
          ref = 0;
        for (let i = 0; i < q.length; i++) {
          err += (q[i] - m.data[i]) ** 2;
          ref += m.data[i] ** 2;
        }
        // 4-bit groups of 32 on near-Gaussian data: relative error ≈ 0.005 (measured 4.6e-3–5.2e-3).
        assert.ok(err / ref < 0.02, `${m.name}: relative error ${err / ref}`);
      }
      assert.deepEqual(Array.from(nat.readFloat32('enc.0.bias')), new Array(48).fill(0.5));
    } finally {
      nat.close();
    }
    const manifest = JSON.parse(readFileSync(join(out, 'run.json'), 'utf8'));
    assert.equal(manifest.complete, true);
    assert.equal(manifest.layers.length, 3);
    assert.ok(!existsSync(join(out, 'scratch')));
    // Resuming a finished run is a no-op that returns the same summary.
    const again = runCli(['quantize', file, '--method', method, '--bits', '4', '--group', '32', '--out', out, '--resume', '--json']);
    assert.equal(again.code, 0, again.stderr);
    assert.equal(JSON.parse(again.stdout).layers.length, 3);
    assert.doesNotMatch(again.stderr, /tensor \d+\/3 /);
  });
}

test('a run killed before its first commit (no run.json, only run-dir folders) resumes as a fresh run; foreign folders are still refused', () => {
  const dir = tmp('df-early-kill');
  const file = join(dir, 'w.safetensors');
  makeBareCheckpoint(file);
  const out = join(dir, 'run');
  // What an engine killed during block 0 left behind: its folders, a lock, a half-written temp file.
  for (const d of ['ckpt', 'hessians', 'details', 'scratch']) mkdirSync(join(out, d), { recursive: true });
  writeFileSync(join(out, 'ckpt', 'block-00000.safetensors.tmp-123-abcd'), 'partial');
  writeFileSync(join(out, 'run.json.tmp-123-abcd'), '{');
  const r = runCli(['quantize', file, '--method', 'rtn', '--bits', '4', '--group', '32', '--out', out, '--resume']);
  assert.equal(r.code, 0, r.stderr);
  assert.ok(existsSync(join(out, 'native')) && JSON.parse(readFileSync(join(out, 'run.json'), 'utf8')).complete);
  assert.ok(!existsSync(join(out, 'ckpt', 'block-00000.safetensors.tmp-123-abcd')), 'stale temp file removed');
  // A folder with someone else's files is not taken over.
  const foreign = join(dir, 'foreign');
  mkdirSync(foreign);
  writeFileSync(join(foreign, 'notes.txt'), 'mine');
  const f = runCli(['quantize', file, '--method', 'rtn', '--out', foreign]);
  assert.equal(f.code, 2, f.stderr);
  assert.match(f.stderr, /not empty and is not a run directory/);
});
