// The ONNX encoder + GraphBuilder, checked by ONNX Runtime itself (CPU EP): if a model is mis-encoded
// session creation fails; values are compared with float64 references.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ComputeRuntime } from '../../../src/engine/compute/runtime';
import * as ort from 'onnxruntime-node';
import { GraphBuilder, attr } from '../../../src/engine/compute/graph';
import { PbWriter } from '../../../src/engine/compute/onnx/proto';
import { randF32, relMaxErr } from './_seeded';

async function run(g: GraphBuilder, feeds: Record<string, ort.Tensor>): Promise<ort.InferenceSession.OnnxValueMapType> {
  const s = await ort.InferenceSession.create(g.toModel(), { executionProviders: ['cpu'] });
  try {
    return await s.run(feeds);
  } finally {
    await s.release();
  }
}
const f32 = (data: Float32Array, dims: number[]) => new ort.Tensor('float32', data, dims);

function matmulRef(a: ArrayLike<number>, b: ArrayLike<number>, m: number, k: number, n: number): Float64Array {
  const c = new Float64Array(m * n);
  for (let i = 0; i < m; i++) for (let p = 0; p < k; p++) for (let j = 0; j < n; j++) c[i * n + j] += a[i * k + p] * b[p * n + j];
  return c;
}

test('protobuf varints: 300 and negative int64', () => {
  assert.deepEqual([...new PbWriter().varint(1, 300).finish()], [0x08, 0xac, 0x02]);
  const neg = new PbWriter().varint(1, -1).finish();
  assert.equal(neg.length, 11); // tag + 10-byte two's complement
  assert.deepEqual([...neg.slice(1)], [255, 255, 255, 255, 255, 255, 255, 255, 255, 1]);
  assert.deepEqual([...new PbWriter().float(2, 1).finish()], [0x15, 0, 0, 0x80, 0x3f]);
});

test('MatMul with a symbolic batch dim + Add broadcast, odd sizes', async () => {
  for (const [m, k, n] of [
    [1, 1, 1],
    [3, 7, 17],
    [129, 127, 3],
  ]) {
    const g = new GraphBuilder('mm');
    const x = g.input('x', 'float32', ['N', k]);
    const wVals = randF32(k * n, 1);
    const bVals = randF32(n, 2);
    const y = g.op('Add', [g.op('MatMul', [x, g.initializer('w', wVals, [k, n])]), g.initializer('b', bVals, [n])]);
    g.output(y, 'y', ['N', n]);
    const xVals = randF32(m * k, 3);
    const r = await run(g, { x: f32(xVals, [m, k]) });
    const ref = matmulRef(xVals, wVals, m, k, n);
    for (let i = 0; i < m; i++) for (let j = 0; j < n; j++) ref[i * n + j] += bVals[j];
    assert.deepEqual(r.y.dims, [m, n]);
    const err = relMaxErr(r.y.data as Float32Array, ref);
    assert.ok(err < 1e-5, `m${m} k${k} n${n}: rel err ${err}`); // measured ~1e-7
  }
});

test('Softmax, ReduceMean, Transpose+Reshape, Gather', async () => {
  const [rows, cols] = [7, 17];
  const g = new GraphBuilder('misc');
  const x = g.input('x', 'float32', [rows, cols]);
  g.output(g.op('Softmax', [x], { axis: -1 }), 'sm');
  g.output(g.op('ReduceMean', [x], { axes: [1], keepdims: 0 }), 'mean');
  const t = g.op('Transpose', [x], { perm: [1, 0] });
  g.output(g.op('Reshape', [t, g.constI64([cols * rows])]), 'flatT');
  const idx = g.initializer('idx', BigInt64Array.from([6n, 0n, 3n]), [3]);
  g.output(g.op('Gather', [x, idx], { axis: 0 }), 'rows');
  const xVals = randF32(rows * cols, 4);
  const r = await run(g, { x: f32(xVals, [rows, cols]) });
  const sm = new Float64Array(rows * cols);
  const mean = new Float64Array(rows);
  for (let i = 0; i < rows; i++) {
    let mx = -Infinity;
    for (let j = 0; j < cols; j++) mx = Math.max(mx, xVals[i * cols + j]);
    let s = 0;
    for (let j = 0; j < cols; j++) s += Math.exp(xVals[i * cols + j] - mx);
    for (let j = 0; j < cols; j++) sm[i * cols + j] = Math.exp(xVals[i * cols + j] - mx) / s;
    for (let j = 0; j < cols; j++) mean[i] += xVals[i * cols + j] / cols;
  }
  assert.ok(relMaxErr(r.sm.data as Float32Array, sm) < 1e-6);
  assert.ok(relMaxErr(r.mean.data as Float32Array, mean) < 1e-6);
  const flatT = r.flatT.data as Float32Array;
  for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) assert.equal(flatT[j * rows + i], xVals[i * cols + j]);
  const got = r.rows.data as Float32Array;
  [6, 0, 3].forEach((src, k) => assert.deepEqual([...got.slice(k * cols, (k + 1) * cols)], [...xVals.slice(src * cols, (src + 1) * cols)]));
});

test('multi-output op (TopK), float/ints/string/tensor attributes, fp16/int32/uint8 initializers', async () => {
  const g = new GraphBuilder('attrs');
  const x = g.input('x', 'float32', [2, 5]);
  const [vals, idx] = g.opMulti('TopK', [x, g.constI64([2])], { axis: 1 }, { outputs: 2, names: ['topv', 'topi'] });
  g.output(vals, 'topv');
  g.output(idx, 'topi');
  g.output(g.op('LeakyRelu', [x], { alpha: 0.25 }), 'leaky'); // float attr
  g.output(g.op('Gemm', [x, g.initializer('gw', Float32Array.from([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]), [2, 5])], { alpha: 2, beta: 1, transB: 1 }), 'gemm');
  g.output(g.op('Constant', [], { value: attr.tensor(Float32Array.from([1.5, -2]), [2]) }), 'const');
  g.output(g.op('Pad', [x, g.constI64([0, 1, 0, 0])], { mode: 'constant' }), 'pad'); // string attr
  // fp16 bits of 1.0, -2.0, 0.5
  const h = g.initializer('h', Uint16Array.from([0x3c00, 0xc000, 0x3800]), [3], 'float16');
  g.output(g.op('Cast', [h], { to: 1 }), 'h32');
  g.output(g.op('Cast', [g.initializer('i32', Int32Array.from([-7, 9]), [2])], { to: 1 }), 'i32f');
  const q = g.initializer('q', Uint8Array.from([0, 128, 255]), [3]);
  g.output(g.op('DequantizeLinear', [q, g.constF32(0.5), g.initializer('zp', Uint8Array.from([128]), [])]), 'deq');
  const xVals = Float32Array.from([3, -1, 4, 1, 5, -9, 2, 6, -5, 3]);
  const r = await run(g, { x: f32(xVals, [2, 5]) });
  assert.deepEqual([...(r.topv.data as Float32Array)], [5, 4, 6, 3]);
  assert.deepEqual([...(r.topi.data as BigInt64Array)], [4n, 2n, 2n, 4n]);
  assert.deepEqual(
    [...(r.leaky.data as Float32Array)],
    [...xVals].map((v) => (v < 0 ? v * 0.25 : v)),
  );
  assert.deepEqual([...(r.gemm.data as Float32Array)], [2 * (3 - 2 + 12 + 4 + 25), 2 * (18 - 7 + 32 + 9 + 50), 2 * (-9 + 4 + 18 - 20 + 15), 2 * (-54 + 14 + 48 - 45 + 30)]);
  assert.deepEqual([...(r.const.data as Float32Array)], [1.5, -2]);
  assert.deepEqual(r.pad.dims, [2, 6]);
  assert.deepEqual([...(r.h32.data as Float32Array)], [1, -2, 0.5]);
  assert.deepEqual([...(r.i32f.data as Float32Array)], [-7, 9]);
  assert.deepEqual([...(r.deq.data as Float32Array)], [-64, 0, 63.5]);
});

test('com.microsoft domain op (FusedMatMul) gets its opset import', async () => {
  const g = new GraphBuilder('ms');
  const a = g.input('a', 'float32', [3, 2]);
  const b = g.input('b', 'float32', [3, 4]);
  g.output(g.op('FusedMatMul', [a, b], { transA: 1, alpha: 0.5 }, { domain: 'com.microsoft' }), 'c');
  const aVals = randF32(6, 5);
  const bVals = randF32(12, 6);
  const r = await run(g, { a: f32(aVals, [3, 2]), b: f32(bVals, [3, 4]) });
  const aT = new Float64Array(6);
  for (let i = 0; i < 3; i++) for (let j = 0; j < 2; j++) aT[j * 3 + i] = aVals[i * 2 + j];
  const ref = matmulRef(aT, bVals, 2, 3, 4).map((v) => 0.5 * v);
  assert.ok(relMaxErr(r.c.data as Float32Array, ref) < 1e-6);
});

test('unique names: clashes are suffixed, duplicate inputs rejected', () => {
  const g = new GraphBuilder();
  const x = g.input('x', 'float32', [1]);
  assert.throws(() => g.input('x', 'float32', [1]), /already used/);
  const w1 = g.initializer('x', Float32Array.of(1), [1]);
  const w2 = g.initializer('x', Float32Array.of(2), [1]);
  assert.equal(new Set([x.name, w1.name, w2.name]).size, 3);
  const a = g.op('Add', [x, w1]);
  const b = g.op('Add', [x, w2]);
  assert.notEqual(a.name, b.name);
  assert.throws(() => g.toModel(), /no outputs/);
});

test('toModel prunes nodes, initializers and inputs no output depends on; the runtime feeds only declared inputs', async () => {
  const g = new GraphBuilder('prune');
  const x = g.input('x', 'float32', [2, 3]);
  const unused = g.input('w_dead', 'float32', [3, 3]);
  const big = g.initializer('dead_const', new Float32Array(256 * 1024), [256, 1024]); // 1 MiB
  g.op('MatMul', [g.op('MatMul', [x, unused]), g.op('Reshape', [big, g.constI64([1024, 256])])]); // dead branch
  g.output(g.op('Mul', [x, g.constF32(2)]), 'y');
  const bytes = g.toModel();
  assert.ok(bytes.length < 4096, `model is ${bytes.length} bytes: the dead 1 MiB initializer was kept`);
  const xv = Float32Array.from([1, 2, 3, 4, 5, 6]);
  const out = await run(g, { x: f32(xv, [2, 3]), w_dead: f32(new Float32Array(9), [3, 3]) });
  assert.deepEqual([...(out.y.data as Float32Array)], [2, 4, 6, 8, 10, 12]);
  // The dead input is gone from the model (ORT would place it on the CPU and copy a device feed back each run),
  // and ComputeRuntime.run accepts the caller's extra feed.
  const rt = await ComputeRuntime.create({ ep: 'cpu' });
  const s = await rt.session('prune-test', () => g.toModel());
  assert.deepEqual(s.inputNames, ['x']);
  const out2 = await rt.run(s, { x: f32(xv, [2, 3]), w_dead: f32(new Float32Array(9), [3, 3]) });
  assert.deepEqual([...(out2.y.data as Float32Array)], [2, 4, 6, 8, 10, 12]);
  await rt.dispose();
});
