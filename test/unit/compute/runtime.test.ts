// EP selection with fail-over, the session cache, copies counters. On a machine without a GPU the
// GPU EPs must fail over to the CPU with a reason; where they work, the same tests check them.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ComputeRuntime, copyRate, kindOf, webgpuOptions, type EpAttempt } from '../../../src/engine/compute/runtime';
import { GraphBuilder } from '../../../src/engine/compute/graph';
import { randF32 } from './_seeded';

const quiet = { log: () => undefined };

function scaleModel(k: number): () => Uint8Array {
  return () => {
    const g = new GraphBuilder('scale');
    g.output(g.op('Mul', [g.input('x', 'float32', ['N']), g.constF32(k)]), 'y');
    return g.toModel();
  };
}

test('cpu: runs, caches sessions by key, counts no copies', async () => {
  const rt = await ComputeRuntime.create({ ep: 'cpu', ...quiet });
  assert.equal(rt.ep, 'cpu');
  assert.deepEqual(rt.attempts, [{ ep: 'cpu', ok: true }]);
  const x = randF32(17, 1);
  let builds = 0;
  const build = () => (builds++, scaleModel(3)());
  const a = await rt.runF32('scale3', build, { x: [x, [17]] });
  const b = await rt.runF32('scale3', build, { x: [x.subarray(0, 7), [7]] }); // symbolic dim: same session
  assert.equal(builds, 1);
  assert.equal(rt.counters.sessionsCreated, 1);
  assert.equal(rt.counters.runs, 2);
  assert.deepEqual(
    [...a.y],
    [...x].map((v) => Math.fround(v * 3)),
  );
  assert.equal(b.y.length, 7);
  assert.equal(rt.counters.h2dCopies + rt.counters.d2hCopies, 0);
  await rt.dispose();
});

test('runs are counted per graph kind (the pipeline logs where the copies go)', async () => {
  assert.equal(kindOf('llama:{"hiddenSize":64,"x":{"y":1}}:T512:in_out:block:accstats:mlp_act'), 'block:accstats:mlp_act');
  assert.equal(kindOf('gptq/loop|128|-1|a|3|t'), 'gptq/loop');
  assert.equal(kindOf('chol/split/2048/1024'), 'chol/split');
  assert.equal(kindOf('identity:float32:2'), 'identity');
  const rt = await ComputeRuntime.create({ ep: 'cpu', ...quiet });
  const x = randF32(5, 2);
  await rt.runF32('gptq/loop|1|2', scaleModel(2), { x: [x, [5]] });
  await rt.scoped('gptq', () => rt.runF32('gptq/loop|1|2', scaleModel(2), { x: [x, [5]] }));
  await rt.runF32('chol/panel/4/4', scaleModel(3), { x: [x, [5]] });
  assert.equal(rt.byGraph.get('gptq/loop')?.runs, 2);
  assert.equal(rt.byGraph.get('chol/panel')?.runs, 1);
  assert.match(rt.graphSummary(), /gptq\/loop: 2 runs/);
  rt.resetCounters();
  assert.equal(rt.byGraph.size, 0);
  await rt.dispose();
});

test('session cache evicts the least recently used entry', async () => {
  const rt = await ComputeRuntime.create({ ep: 'cpu', maxSessions: 2, ...quiet });
  const x = Float32Array.of(1);
  await rt.runF32('k1', scaleModel(1), { x: [x, [1]] });
  await rt.runF32('k2', scaleModel(2), { x: [x, [1]] });
  await rt.runF32('k1', scaleModel(1), { x: [x, [1]] }); // k1 becomes most recent
  await rt.runF32('k3', scaleModel(3), { x: [x, [1]] }); // evicts k2
  assert.equal(rt.counters.sessionsCreated, 3);
  await rt.runF32('k1', scaleModel(1), { x: [x, [1]] });
  assert.equal(rt.counters.sessionsCreated, 3);
  await rt.runF32('k2', scaleModel(2), { x: [x, [1]] });
  assert.equal(rt.counters.sessionsCreated, 4);
  await rt.dispose();
});

function checkAttempts(attempts: readonly EpAttempt[], order: string[], used: string): void {
  assert.deepEqual(
    attempts.map((a) => a.ep),
    order.slice(0, attempts.length),
  );
  assert.equal(attempts[attempts.length - 1].ep, used);
  assert.ok(attempts[attempts.length - 1].ok);
  for (const a of attempts.slice(0, -1)) {
    assert.equal(a.ok, false);
    assert.ok(a.reason && a.reason.length > 0, `${a.ep} failed without a reason`);
  }
}

test("'webgpu' either runs on WebGPU or falls back to the CPU with a reported reason", async () => {
  const logs: string[] = [];
  const rt = await ComputeRuntime.create({ ep: 'webgpu', log: (_l, m) => logs.push(m) });
  checkAttempts(rt.attempts, ['webgpu', 'cpu'], rt.ep);
  if (rt.ep === 'cpu') assert.ok(logs.some((m) => m.includes('webgpu') && m.includes(rt.attempts[0].reason!.slice(0, 40))));
  // Upload → compute on device → download round trip, whatever EP we got.
  const x = randF32(129, 2);
  const dev = await rt.upload(rt.host(x, [129]));
  const s = await rt.session('scale2', scaleModel(2), 'device');
  const y = (await rt.run(s, { x: dev })).y;
  const back = await rt.download(y);
  rt.release(dev, y);
  assert.deepEqual(
    [...back],
    [...x].map((v) => v * 2),
  );
  if (rt.ep === 'webgpu') {
    assert.equal(rt.counters.h2dCopies, 1);
    assert.equal(rt.counters.d2hCopies, 1);
    assert.equal(rt.counters.d2hBytes, 129 * 4);
  }
  await rt.dispose();
});

test("'auto' tries CUDA, then WebGPU, then CPU and reports the EP used", async () => {
  const rt = await ComputeRuntime.create({ ep: 'auto', ...quiet });
  checkAttempts(rt.attempts, ['cuda', 'webgpu', 'cpu'], rt.ep);
  const out = await rt.runF32('scale5', scaleModel(5), { x: [Float32Array.of(1, -2), [2]] });
  assert.deepEqual([...out.y], [5, -10]);
  await rt.dispose();
});

test('LOPRO_WEBGPU_OPTIONS: name=value pairs among the options the Node binding passes; anything else is refused by name', () => {
  assert.deepEqual(webgpuOptions(''), {});
  assert.deepEqual(webgpuOptions(' validationMode=disabled , storageBufferCacheMode=bucket'), { validationMode: 'disabled', storageBufferCacheMode: 'bucket' });
  assert.throws(() => webgpuOptions('maxNumPendingDispatches=64'), /maxNumPendingDispatches=64.*validationMode/);
  assert.throws(() => webgpuOptions('validationMode'), /not name=value/);
});

test('copyRate: bytes per millisecond as GB/s; nothing timed is a dash, not Infinity', () => {
  assert.equal(copyRate(3.2e9, 2000), '1.60 GB/s');
  assert.equal(copyRate(5, 0), '– GB/s');
});
