// ORT fake-quant vs the GPTQ-semantics reference; rounding implementations agree on ties.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as ort from 'onnxruntime-node';
import { fakeQuant, fakeQuant_ref, roundHalfEven, roundNode } from '../../../src/engine/compute/fakequant';
import { GraphBuilder } from '../../../src/engine/compute/graph';
import { ComputeRuntime } from '../../../src/engine/compute/runtime';
import { randF32, relMaxErr } from './_seeded';

const quiet = { log: () => undefined };

test('composed round-half-even equals ONNX Round (ties, near-ties, random)', async () => {
  const vals: number[] = [0.49999997, -0.49999997, 1.4999999, 2.5000002, 8388607.5, -8388607.5, 0, -0];
  for (let k = -400; k <= 400; k++) vals.push(k / 2, k / 4);
  const r = randF32(2000, 42);
  for (let i = 0; i < r.length; i++) vals.push(r[i] * 300);
  const x = Float32Array.from(vals);
  const g = new GraphBuilder('round');
  const xi = g.input('x', 'float32', ['N']);
  g.output(roundNode(g, xi, 'even', 'op'), 'op');
  g.output(roundNode(g, xi, 'even', 'composed'), 'composed');
  g.output(roundNode(g, xi, 'up', 'composed'), 'up');
  const s = await ort.InferenceSession.create(g.toModel());
  const out = await s.run({ x: new ort.Tensor('float32', x, [x.length]) });
  const op = out.op.data as Float32Array;
  const comp = out.composed.data as Float32Array;
  const up = out.up.data as Float32Array;
  for (let i = 0; i < x.length; i++) {
    assert.equal(comp[i] + 0, op[i] + 0, `x=${x[i]}`); // +0: -0 and 0 are the same code
    assert.equal(op[i] + 0, roundHalfEven(x[i]) + 0, `x=${x[i]}`);
  }
  assert.equal(up[vals.indexOf(0.5)], 1); // half up
  assert.equal(op[vals.indexOf(0.5)], 0); // half even
  await s.release();
});

test('fakeQuant on ORT equals the float32 reference bit for bit (odd sizes, groups, bits, sym/asym)', async () => {
  const rt = await ComputeRuntime.create({ ep: 'cpu', ...quiet });
  let seed = 3;
  const configs: [number, number, number, boolean][] = [[1, -1, 2, false], [7, -1, 3, false], [7, -1, 3, true], [127, 32, 4, false]];
  for (const bits of [2, 3, 4, 8]) for (const sym of [false, true]) configs.push([129, 32, bits, sym]);
  for (const [cols, groupSize, bits, sym] of configs)
    for (const rows of [1, 3, 17, 129]) {
      const w = randF32(rows * cols, seed++);
      if (rows > 2) w.fill(0, cols, 2 * cols); // an all-zero row: xmin = −1, xmax = 1
      const p = { bits, groupSize, sym };
      const ref = fakeQuant_ref(w, rows, cols, p);
      for (const roundImpl of ['op', 'composed'] as const) {
        const got = await fakeQuant(w, rows, cols, p, { rt, roundImpl });
        const what = `${rows}x${cols} g${groupSize} w${bits} sym=${sym} ${roundImpl}`;
        // +0: the composed rounding turns −0 into 0 (same code), everything else is bit-exact.
        const z = (a: Float32Array) => a.map((v) => v + 0);
        assert.deepEqual(got.scale, ref.scale, what);
        assert.deepEqual(z(got.zero), z(ref.zero), what);
        assert.deepEqual(z(got.codes), z(ref.codes), what);
        assert.deepEqual(z(got.deq), z(ref.deq), what);
      }
    }
  await rt.dispose();
});

test('exact ties: half-to-even vs half-up, float64 reference close to the float32 one', async () => {
  const rt = await ComputeRuntime.create({ ep: 'cpu', ...quiet });
  // sym, 2 bits, max |w| = 1.5 → scale 1, zero 2: w/scale are exact halves.
  const w = Float32Array.from([0.5, -0.5, 1.5, -1.5, 1, 0]);
  const even = await fakeQuant(w, 1, 6, { bits: 2, groupSize: -1, sym: true }, { rt });
  assert.deepEqual([...even.codes], [2, 2, 3, 0, 3, 2]);
  const up = await fakeQuant(w, 1, 6, { bits: 2, groupSize: -1, sym: true, rounding: 'up' }, { rt });
  assert.deepEqual([...up.codes], [3, 2, 3, 1, 3, 2]);
  const x = randF32(17 * 129, 77);
  const f32 = fakeQuant_ref(x, 17, 129, { bits: 4, groupSize: 32, sym: false });
  const f64 = fakeQuant_ref(x, 17, 129, { bits: 4, groupSize: 32, sym: false }, false);
  assert.ok(relMaxErr(f32.scale, f64.scale) < 1e-6);
  let same = 0;
  for (let i = 0; i < x.length; i++) same += f32.codes[i] === f64.codes[i] ? 1 : 0;
  assert.ok(same / x.length > 0.999, `f32/f64 code agreement ${same / x.length}`); // measured 1.0
  await rt.dispose();
});
