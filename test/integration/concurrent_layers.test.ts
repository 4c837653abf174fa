// A group's layers quantized concurrently (opt-in, LOPRO_CONCURRENT_LAYERS=1; here on the CPU EP with
// 2 worker threads) give the same bytes as one after the other: the layers
// share the worker pool through GptqPool.exclusive (its replies carry no task id, so interleaved tasks
// would take each other's replies) and are committed in member order.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { runCli, sha256, tmp, SMALL, TINY, TRAIN } from './helpers';

const ARGS = ['quantize', TINY, '--method', 'lopro', '--bits', '2', '--calib', TRAIN, ...SMALL];

test('concurrent layers of a group (shared worker pool) = sequential layers, byte for byte', () => {
  const base = tmp('concurrent');
  const seq = runCli([...ARGS, '--out', join(base, 'seq')], { LOPRO_THREADS: '2', LOPRO_CONCURRENT_LAYERS: '0' });
  assert.equal(seq.code, 0, seq.stderr);
  assert.match(seq.stderr, /layers quantized on 2 workers/);
  const con = runCli([...ARGS, '--out', join(base, 'con')], { LOPRO_THREADS: '2', LOPRO_CONCURRENT_LAYERS: '1' });
  assert.equal(con.code, 0, con.stderr);
  assert.equal(sha256(join(base, 'con', 'native', 'model.safetensors')), sha256(join(base, 'seq', 'native', 'model.safetensors')));
  assert.equal(sha256(join(base, 'con', 'run.json')).length, 64);
});
