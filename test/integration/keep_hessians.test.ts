// keepHessians off: the run folder holds no Hessian cache, the quantized model is byte-identical to a run that
// keeps it, and re-quantizing a layer says why it cannot.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { requantizeLayer } from '../../src/engine/run/requantize';
import { runCli, sha256, SMALL, tmp, TINY, TRAIN } from './helpers';

test('--no-keep-hessians: no hessians/ files, the same output, re-quantize refused by name', async () => {
  const dir = tmp('keeph');
  const args = ['quantize', TINY, '--calib', TRAIN, ...SMALL, '--method', 'gptq', '--bits', '4', '--quiet'];
  assert.equal(runCli([...args, '--out', join(dir, 'keep')]).code, 0);
  const r = runCli([...args, '--out', join(dir, 'none'), '--no-keep-hessians']);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(readdirSync(join(dir, 'keep', 'hessians')).length, 4);
  assert.deepEqual(readdirSync(join(dir, 'none', 'hessians')), []);
  assert.equal(sha256(join(dir, 'none', 'native', 'model.safetensors')), sha256(join(dir, 'keep', 'native', 'model.safetensors')));
  await assert.rejects(requantizeLayer(join(dir, 'none'), 'model.layers.0.mlp.down_proj', { bits: 3 }), /kept no Hessians \(keepHessians was off\)/);
  await requantizeLayer(join(dir, 'keep'), 'model.layers.0.mlp.down_proj', { bits: 3 });
});
