// Exported LoPRo linears (export_onnx_linear.ts, issue 18) run by ONNX Runtime against the float64 twin of spec §4
// (loproForward_ref): the permutation (GatherElements on an index row broadcast by Expand), the partial block rotation,
// every residual kind and the low-rank branch (MatMul → Gemm whose C is the residual's product) give the same numbers;
// layers that read the same input (q, k, v) share one permutation, one rotation MatMul and one low-rank first product.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as ort from 'onnxruntime-node';
import { GraphBuilder, type AttrValue, type OpOptions, type Value } from '../../../src/engine/compute/graph';
import { DEFAULT_LAYER_CONFIG, type LayerConfig } from '../../../src/protocol/config';
import { loproForward_ref, rotationPlanOf, type LoproStoredLayer } from '../../../src/engine/quant/lopro_dequant';
import { quantizeLayer } from '../../../src/engine/run/quantize_layer';
import { emitLoproLinear, type LinearEmitOptions } from '../../../src/engine/run/export_onnx_linear';
import { mulberry32 } from '../../../src/engine/util/random';
import { cpuBackend } from '../backend/backends';

/** Records every node, to count those that run per call (the ones that depend on a graph input). */
class CountingGraph extends GraphBuilder {
  readonly ops: { type: string; inputs: string[]; outputs: string[] }[] = [];
  override opMulti(opType: string, inputs: readonly (Value | null)[], attrs: Record<string, AttrValue> = {}, opts: OpOptions = {}): Value[] {
    const outs = super.opMulti(opType, inputs, attrs, opts);
    this.ops.push({ type: opType, inputs: inputs.map((v) => v?.name ?? ''), outputs: outs.map((v) => v.name) });
    return outs;
  }
  /** Op types of the nodes fed, directly or not, by `input`: what is left after ORT folds the constants. */
  runtimeOps(input: string): string[] {
    const live = new Set([input]);
    const types: string[] = [];
    for (const o of this.ops)
      if (o.inputs.some((i) => live.has(i))) {
        types.push(o.type);
        for (const out of o.outputs) live.add(out);
      }
    return types;
  }
}

const FLOAT_ACTS: LinearEmitOptions = { matMulNBits: true, accuracyLevel: 0, minMatMulNBits: 2 };

/** A layer quantized on a Hessian of correlated random activations (a real permutation and α). */
async function storedLayer(rows: number, cols: number, o: Partial<LayerConfig>, seed: number): Promise<LoproStoredLayer> {
  const rnd = mulberry32(seed);
  const gauss = () => Math.sqrt(-2 * Math.log(1 - rnd())) * Math.cos(2 * Math.PI * rnd());
  const W = Float32Array.from({ length: rows * cols }, gauss);
  const T = 2 * cols;
  const scale = Float64Array.from({ length: cols }, () => 0.2 + 3 * rnd() ** 3);
  const X = Float64Array.from({ length: T * cols }, (_, i) => gauss() * scale[i % cols]);
  const H = new Float64Array(cols * cols),
    absMean = new Float64Array(cols);
  for (let t = 0; t < T; t++)
    for (let i = 0; i < cols; i++) {
      const xi = X[t * cols + i];
      absMean[i] += Math.abs(xi) / T;
      for (let j = 0; j < cols; j++) H[i * cols + j] += (xi * X[t * cols + j]) / T;
    }
  const lc: LayerConfig = { ...DEFAULT_LAYER_CONFIG, ...o };
  const out = await quantizeLayer(cpuBackend(1), { name: `layer${seed}`, block: 0, module: 'm', rows, cols, W, H, absMean }, lc, { seed });
  return out.stored as LoproStoredLayer;
}

/** The layers on one input x [tokens, n], each emitted with `siblings` (all of them, or none: each alone). */
async function runLinears(layers: LoproStoredLayer[], x: Float32Array, tokens: number, opts: LinearEmitOptions, o: { bias?: Float32Array; shared?: boolean } = {}) {
  const g = new CountingGraph('linear');
  const xin = g.input('x', 'float32', ['n', layers[0].cols]);
  const siblings = o.shared ? layers.map((s, i) => ({ name: `lin${i}`, s })) : [];
  const kinds = layers.map((s, i) => {
    const b = o.bias ? g.initializer(`bias${i}`, o.bias, [s.rows]) : null;
    const res = emitLoproLinear(g, `lin${i}`, s, xin, b, opts, siblings);
    g.output(res.y, `y${i}`, ['n', s.rows]);
    return res.kind;
  });
  const session = await ort.InferenceSession.create(g.toModel(), { graphOptimizationLevel: 'all', executionProviders: ['cpu'] });
  const out = await session.run({ x: new ort.Tensor('float32', x, [tokens, layers[0].cols]) });
  await session.release();
  return { ys: layers.map((_, i) => out[`y${i}`].data as Float32Array), kinds, ops: g.runtimeOps('x') };
}

async function runLinear(s: LoproStoredLayer, x: Float32Array, tokens: number, opts: LinearEmitOptions, bias?: Float32Array) {
  const r = await runLinears([s], x, tokens, opts, { bias });
  return { y: r.ys[0], kind: r.kinds[0], ops: r.ops };
}

function relDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let d = 0,
    m = 0;
  for (let i = 0; i < a.length; i++) {
    d = Math.max(d, Math.abs(a[i] - b[i]));
    m = Math.max(m, Math.abs(b[i]));
  }
  return d / m;
}

const cases: { name: string; rows: number; cols: number; cfg: Partial<LayerConfig>; ops: string[]; bias?: boolean }[] = [
  {
    name: 'W2 r8, b_I = b_H = 64',
    rows: 48,
    cols: 256,
    cfg: { method: 'lopro', bits: 2, rank: 8, salientBlock: 64, hadamardBlock: 64 },
    ops: ['Shape', 'Expand', 'GatherElements', 'Split', 'Reshape', 'MatMul', 'Reshape', 'Concat', 'MatMulNBits', 'MatMul', 'Gemm'],
  },
  {
    name: 'W4 r4, b_I = 128 = 4 × b_H, with a bias',
    rows: 40,
    cols: 256,
    cfg: { method: 'lopro', bits: 4, rank: 4, salientBlock: 128, hadamardBlock: 32 },
    ops: ['Shape', 'Expand', 'GatherElements', 'Split', 'Reshape', 'MatMul', 'Reshape', 'Concat', 'MatMulNBits', 'MatMul', 'Gemm', 'Add'],
    bias: true,
  },
  {
    name: 'W2 r4, b_I = 40, not a multiple of b_H',
    rows: 32,
    cols: 168,
    cfg: { method: 'lopro', bits: 2, rank: 4, salientBlock: 40, hadamardBlock: 64 },
    ops: ['Shape', 'Expand', 'GatherElements', 'Split', 'Reshape', 'MatMul', 'Reshape', 'Concat', 'MatMulNBits', 'MatMul', 'Gemm'],
  },
  {
    name: 'W2 r0, full rotation',
    rows: 32,
    cols: 256,
    cfg: { method: 'lopro', bits: 2, rank: 0, hadamardBlock: 64, rotation: 'full' },
    ops: ['Shape', 'Expand', 'GatherElements', 'Reshape', 'MatMul', 'Reshape', 'MatMulNBits'],
  },
  {
    name: 'W3 r4, no rotation (3-bit codes in the 4-bit container)',
    rows: 32,
    cols: 256,
    cfg: { method: 'lopro', bits: 3, rank: 4, rotation: 'none' },
    ops: ['Shape', 'Expand', 'GatherElements', 'MatMulNBits', 'MatMul', 'Gemm'],
  },
  {
    name: 'lopro_v W2 r4, b_I = b_H = 64 (codebook residual)',
    rows: 32,
    cols: 256,
    cfg: { method: 'lopro_v', bits: 2, vqDim: 2, rank: 4, salientBlock: 64, hadamardBlock: 64 },
    ops: ['Shape', 'Expand', 'GatherElements', 'Split', 'Reshape', 'MatMul', 'Reshape', 'Concat', 'MatMul', 'MatMul', 'Gemm'],
  },
];

for (const [k, c] of cases.entries())
  test(`exported LoPRo linear = spec §4's float64 forward: ${c.name}`, async (tc) => {
    const s = await storedLayer(c.rows, c.cols, c.cfg, 11 + k);
    const plan = rotationPlanOf(s);
    tc.diagnostic(`plan: b_I ${plan.salient}, b_H ${plan.block}; rank ${s.rank}`);
    assert.ok(
      s.perm.some((p, j) => p !== j),
      'the permutation is not the identity',
    );
    const rnd = mulberry32(100 + k);
    const bias = c.bias ? Float32Array.from({ length: c.rows }, () => rnd() - 0.5) : undefined;
    for (const tokens of [1, 5]) {
      const x = Float32Array.from({ length: tokens * c.cols }, () => 4 * (rnd() - 0.5));
      const ref = loproForward_ref(x, s, tokens);
      if (bias) for (let t = 0; t < tokens; t++) for (let i = 0; i < c.rows; i++) ref[t * c.rows + i] += bias[i];
      // MatMulNBits (or the codebook Gather) with float activations, and the in-graph dequantization: both exact.
      for (const opts of [FLOAT_ACTS, { ...FLOAT_ACTS, matMulNBits: false }]) {
        const r = await runLinear(s, x, tokens, opts, bias);
        const d = relDiff(r.y, ref);
        tc.diagnostic(`${tokens} token(s), ${r.kind}: max |Δy| / max |y| = ${d.toExponential(2)}; ${r.ops.length} nodes per call`);
        assert.ok(d < 1e-5, `${r.kind}, ${tokens} token(s): ${d}`);
        if (r.kind === 'matmulnbits' || r.kind === 'codebook') assert.deepEqual(r.ops, c.ops);
      }
    }
  });

test('layers reading one input share the permutation, the rotation MatMul and the low-rank first product: same numbers', async (tc) => {
  // q-, k- and v-like layers on 256 columns: partial rotation with rank 8, partial with b_I = 128 and no low rank,
  // full rotation with rank 4 (no salient block), all with b_H = 64.
  const layers = [
    await storedLayer(48, 256, { method: 'lopro', bits: 2, rank: 8, salientBlock: 64, hadamardBlock: 64 }, 31),
    await storedLayer(32, 256, { method: 'lopro', bits: 2, rank: 0, salientBlock: 128, hadamardBlock: 64 }, 32),
    await storedLayer(32, 256, { method: 'lopro', bits: 4, rank: 4, hadamardBlock: 64, rotation: 'full' }, 33),
  ];
  const rnd = mulberry32(7);
  for (const tokens of [1, 5]) {
    const x = Float32Array.from({ length: tokens * 256 }, () => 4 * (rnd() - 0.5));
    const refs = layers.map((s) => loproForward_ref(x, s, tokens));
    for (const opts of [FLOAT_ACTS, { ...FLOAT_ACTS, matMulNBits: false }]) {
      const alone = await runLinears(layers, x, tokens, opts);
      const shared = await runLinears(layers, x, tokens, opts, { shared: true });
      const d = Math.max(...shared.ys.map((y, i) => relDiff(y, refs[i])));
      tc.diagnostic(`${tokens} token(s), ${shared.kinds[0]}: shared ${shared.ops.length} nodes (alone ${alone.ops.length}), max |Δy| / max |y| = ${d.toExponential(2)}`);
      assert.ok(d < 1e-5, `shared: ${d}`);
      assert.ok(Math.max(...alone.ys.map((y, i) => relDiff(y, refs[i]))) < 1e-5);
      if (opts.matMulNBits)
        assert.deepEqual(shared.ops, [
          ...['Shape', 'Slice', 'Concat', 'Expand', 'GatherElements', 'Split'], // one permutation for the three
          ...['Reshape', 'MatMul', 'Reshape', 'Split', 'Concat', 'Concat'], // one rotation, cut per layer
          ...['MatMul', 'Split'], // x·[V₁' | V₃'], cut per layer
          ...['MatMulNBits', 'Gemm', 'MatMulNBits', 'MatMulNBits', 'Gemm'],
        ]);
    }
  }
  // A layer with another rotation block is emitted alone; the two alike still share.
  const other = await storedLayer(32, 256, { method: 'lopro', bits: 2, rank: 4, salientBlock: 128, hadamardBlock: 32 }, 34);
  const x = Float32Array.from({ length: 256 }, () => rnd() - 0.5);
  const three = [layers[0], other, layers[1]];
  const mixed = await runLinears(three, x, 1, FLOAT_ACTS, { shared: true });
  const alone = await runLinears(three, x, 1, FLOAT_ACTS);
  tc.diagnostic(`two alike and one other: ${mixed.ops.length} nodes (alone ${alone.ops.length})`);
  assert.ok(mixed.ops.length < alone.ops.length);
  three.forEach((s, i) => assert.ok(relDiff(mixed.ys[i], loproForward_ref(x, s, 1)) < 1e-5, `layer ${i}`));
});
