import { test } from 'node:test';
import assert from 'node:assert/strict';
import { HessianAccumulator, accumulateHessian, mirrorUpper } from '../../../src/engine/quant/hessian';
import { ProtocolError } from '../../../src/protocol/rpc';
import { caseFiles, loadCase } from '../../golden/golden_cases';
import { hessianNaive, syntheticActivations } from './synthetic';

const maxAbsDiff = (a: ArrayLike<number>, b: ArrayLike<number>) => {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
};
const maxAbs = (a: ArrayLike<number>) => {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]));
  return m;
};

test('running average over sequences equals (2/N)·XᵀX for every batch layout (odd sizes)', () => {
  const cols = 13,
    seqlen = 7,
    seqs = 5,
    tokens = seqs * seqlen;
  const X = syntheticActivations(tokens, cols, 11);
  const want = hessianNaive(X, tokens, cols, seqs);
  // seq: one call per sequence; one: a single [5, 7, C] call; uneven: 1, 2, 2 sequences.
  for (const layout of [[1, 1, 1, 1, 1], [5], [1, 2, 2]]) {
    const acc = new HessianAccumulator(cols);
    let t0 = 0;
    for (const b of layout) {
      acc.add(X.subarray(t0 * cols, (t0 + b * seqlen) * cols), b * seqlen, b);
      t0 += b * seqlen;
    }
    assert.equal(acc.nsamples, seqs);
    const H = acc.finish();
    const rel = maxAbsDiff(H, want) / maxAbs(want);
    assert.ok(rel < 1e-13, `layout ${layout}: rel ${rel}`); // measured ~1e-16
    for (let i = 0; i < cols; i++) for (let j = 0; j < cols; j++) assert.equal(H[i * cols + j], H[j * cols + i]);
  }
});

test('2-D calls count one sample each (N = calls, not tokens)', () => {
  const cols = 6,
    X = syntheticActivations(8, cols, 2);
  const h = new Float64Array(cols * cols);
  let n = accumulateHessian(h, 0, X.subarray(0, 4 * cols), 4, cols, 1);
  n = accumulateHessian(h, n, X.subarray(4 * cols), 4, cols, 1);
  assert.equal(n, 2);
  const want = hessianNaive(X, 8, cols, 2);
  assert.ok(maxAbsDiff(mirrorUpper(h, cols), want) / maxAbs(want) < 1e-13);
});

test("a gram hook (the pipeline's ORT XᵀX) gives the same H", () => {
  const cols = 9,
    X = syntheticActivations(20, cols, 5);
  const gram = (x: Float32Array, t: number, c: number) => hessianNaive(x, t, c, 2); // (2/2)·XᵀX = XᵀX
  const a = new HessianAccumulator(cols, { gram }),
    b = new HessianAccumulator(cols);
  a.add(X.subarray(0, 10 * cols), 10);
  a.add(X.subarray(10 * cols), 10);
  b.add(X.subarray(0, 10 * cols), 10);
  b.add(X.subarray(10 * cols), 10);
  const ha = a.finish(),
    hb = b.finish();
  assert.ok(maxAbsDiff(ha, hb) / maxAbs(hb) < 1e-13); // summation order only
});

test('golden: our float64 H is within the README bound of the reference float32 H', () => {
  // README §4: stored f32 H is within 4.3e-7·max|H| of the exact value; ours is ~exact.
  for (const file of caseFiles('gptq').files.filter((f) => /s33x200_gptq_w3_g128_sym_uneven|s16x64_gptq_w4_g32_asym_2d|s128x256_gptq_w4_g128_asym_onebatch/.test(f))) {
    const c = loadCase(file);
    const shapes = JSON.parse(c.meta.add_batch_shapes) as number[][];
    const x = c.X;
    const acc = new HessianAccumulator(c.cols);
    let t0 = 0;
    for (const s of shapes) {
      const samples = s.length === 2 ? 1 : s[0],
        tokens = s.length === 2 ? s[0] : s[0] * s[1];
      acc.add(x.subarray(t0 * c.cols, (t0 + tokens) * c.cols), tokens, samples);
      t0 += tokens;
    }
    assert.equal(acc.nsamples, Number(c.meta.nsamples), c.name);
    const H = acc.finish();
    const rel = maxAbsDiff(H, c.H) / maxAbs(c.H);
    assert.ok(rel < 1e-6, `${c.name}: rel ${rel}`); // measured ≤ 4.3e-7 (the reference's f32 rounding)
  }
});

test('NaN activations → E_NON_FINITE', () => {
  const acc = new HessianAccumulator(3, { name: 'model.layers.0.mlp.down_proj' });
  assert.throws(
    () => acc.add(new Float32Array([1, NaN, 2]), 1),
    (e: unknown) => e instanceof ProtocolError && e.code === 'E_NON_FINITE' && e.where === 'model.layers.0.mlp.down_proj',
  );
});
