// Bad input to the CLI: one line on stderr with the error code, the file/tensor/flag and a hint;
// exit code 2; never a stack trace.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cpSync, existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync, truncateSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { makeBareCheckpoint, runCli, SMALL, tmp, TINY, TRAIN } from './helpers';
import { SafetensorsFile } from '../../src/engine/io/safetensors';
import { writeSafetensorsAtomic } from '../../src/engine/io/safetensors_writer';

function expectUserError(args: string[], code: string, mention?: RegExp): string {
  const r = runCli(args);
  assert.equal(r.code, 2, `exit code for ${args.join(' ')}: ${r.stderr}`);
  const lines = r.stderr.trim().split('\n');
  const errLine = lines[lines.length - 1];
  assert.match(errLine, new RegExp(`^lopro: ${code}: `), r.stderr);
  assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
  if (mention) assert.match(errLine, mention);
  return errLine;
}

test('bad inputs give their error code and exit 2', () => {
  const dir = tmp('bad');
  const good = join(dir, 'good.safetensors');
  makeBareCheckpoint(good);

  expectUserError(['quantize', join(dir, 'missing.safetensors'), '--out', join(dir, 'o1')], 'E_IO', /missing\.safetensors/);

  const trunc = join(dir, 'trunc.safetensors');
  writeFileSync(trunc, readFileSync(good));
  truncateSync(trunc, statSync(trunc).size - 100);
  expectUserError(['quantize', trunc, '--out', join(dir, 'o2')], 'E_BAD_CHECKPOINT', /trunc\.safetensors/);

  const nan = join(dir, 'nan.safetensors');
  const w = new Float32Array(64 * 32).fill(0.1);
  w[77] = NaN;
  writeSafetensorsAtomic(nan, [{ name: 'x.weight', dtype: 'F32', shape: [64, 32], data: w }]);
  expectUserError(['quantize', nan, '--method', 'rtn', '--out', join(dir, 'o3')], 'E_NON_FINITE', /x/);

  expectUserError(['quantize', good, '--bits', '5', '--out', join(dir, 'o4')], 'E_BAD_CONFIG', /--bits/);
  expectUserError(['quantize', good, '--bits', 'four', '--out', join(dir, 'o4')], 'E_BAD_CONFIG', /--bits/);
  expectUserError(['quantize', good, '--frobnicate', '1', '--out', join(dir, 'o4')], 'E_BAD_CONFIG', /--frobnicate/);
  expectUserError(['quantize', good, '--method', 'awq', '--out', join(dir, 'o4')], 'E_BAD_CONFIG', /method/);
  expectUserError(['quantize', good], 'E_INVALID_PARAMS', /--out/);
  expectUserError(['frobnicate'], 'E_INVALID_PARAMS');

  const notRun = join(dir, 'not-a-run');
  mkdirSync(notRun);
  writeFileSync(join(notRun, 'notes.txt'), 'mine');
  expectUserError(['quantize', good, '--out', notRun], 'E_INVALID_PARAMS', /not empty/);

  expectUserError(['quantize', TINY, '--method', 'gptq', '--out', join(dir, 'o5')], 'E_BAD_CALIBRATION', /--calib|calib/);
  expectUserError(['quantize', TINY, '--calib', join(dir, 'none.txt'), '--out', join(dir, 'o5')], 'E_BAD_CALIBRATION', /none\.txt/);

  // A checkpoint of another config is refused with the reason.
  const run = join(dir, 'run');
  assert.equal(runCli(['quantize', good, '--method', 'rtn', '--bits', '4', '--out', run]).code, 0);
  const line = expectUserError(['quantize', good, '--method', 'rtn', '--bits', '3', '--out', run, '--resume'], 'E_INCOMPATIBLE_CHECKPOINT', /bits: 4 → 3/);
  assert.match(line, /config differs/);
  const other = join(dir, 'other.safetensors');
  makeBareCheckpoint(other, 2);
  expectUserError(['quantize', other, '--method', 'rtn', '--bits', '4', '--out', run, '--resume'], 'E_INCOMPATIBLE_CHECKPOINT', /model files differ/);

  // A data-free run has no model to evaluate; an export of an unknown format is refused.
  expectUserError(['eval', run, '--text', join(dir, 'good.safetensors')], 'E_INVALID_PARAMS', /data-free/);
  expectUserError(['export', run, '--format', 'gguf', '--out', join(dir, 'e')], 'E_INVALID_PARAMS', /gguf/);
  expectUserError(['eval', join(dir, 'nowhere'), '--text', 'x.txt'], 'E_BAD_CONFIG', /config\.json/);
});

test('a run that fails before its first commit leaves nothing that looks like a run', () => {
  const dir = tmp('bad-early');
  // Data-free: the NaN is found in the first tensor, after the run folder was made.
  const nan = join(dir, 'nan.safetensors');
  const w = new Float32Array(64 * 32).fill(0.1);
  w[5] = Number.POSITIVE_INFINITY;
  writeSafetensorsAtomic(nan, [{ name: 'x.weight', dtype: 'F32', shape: [64, 32], data: w }]);
  const out = join(dir, 'run');
  expectUserError(['quantize', nan, '--method', 'rtn', '--out', out], 'E_NON_FINITE', /x\.weight|x/);
  assert.equal(existsSync(out), false, 'the folder the run made is gone');
  // A model folder with a NaN in block 0's MLP: found by the first block's forward, before any commit.
  const model = join(dir, 'tiny-nan');
  cpSync(TINY, model, { recursive: true });
  const f = SafetensorsFile.open(join(model, 'model.safetensors'));
  const tensors = f.entries.map((e) => ({ name: e.name, dtype: 'F32' as const, shape: [...e.shape], data: f.readFloat32(e.name) }));
  f.close();
  tensors.find((t) => t.name === 'model.layers.0.mlp.up_proj.weight')!.data[3] = Number.NaN;
  writeSafetensorsAtomic(join(model, 'model.safetensors'), tensors);
  const mine = join(dir, 'mine');
  mkdirSync(mine); // a folder the user made stays, empty
  for (const o of [out, mine]) {
    const r = runCli(['quantize', model, '--calib', TRAIN, ...SMALL, '--method', 'gptq', '--out', o]);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr.trim().split('\n').pop()!, /^lopro: E_NON_FINITE: .*model\.layers\.0\./);
  }
  assert.equal(existsSync(out), false);
  assert.deepEqual(readdirSync(mine), []);
  // --resume there is a fresh run, not "not a run directory".
  const r = runCli(['quantize', TINY, '--calib', TRAIN, ...SMALL, '--method', 'rtn', '--out', out, '--resume']);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /nothing to resume .* starting a fresh run/);
});
