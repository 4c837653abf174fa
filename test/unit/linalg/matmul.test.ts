// ORT matrix products vs float64 references at odd sizes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { accumulateXtX, accumulateXtX_ref, gemmAccumulate, gemmAccumulate_ref, HessianAccumulator, matmul, matmul_ref } from '../../../src/engine/linalg/matmul';
import { ComputeRuntime } from '../../../src/engine/compute/runtime';
import { randF32, relMaxErr } from '../compute/_seeded';

const SIZES = [1, 3, 7, 17, 127, 129];
const TOL = 1e-5; // f32 products of K ≤ 129 terms in [-1, 1]: measured ≤ 3e-7 relative to max |C|

test('matmul with every transpose flag', async () => {
  const rt = await ComputeRuntime.create({ ep: 'cpu', log: () => undefined });
  let seed = 1;
  for (const m of SIZES)
    for (const [k, n] of [[SIZES[(m * 7) % 6], 17], [129, SIZES[(m * 5) % 6]]]) {
      for (const [tA, tB] of [[false, false], [true, false], [false, true], [true, true]]) {
        const a = randF32(m * k, seed++);
        const b = randF32(k * n, seed++);
        const c = await matmul(a, b, m, k, n, { transA: tA, transB: tB, rt });
        const e = relMaxErr(c, matmul_ref(a, b, m, k, n, tA, tB));
        assert.ok(e < TOL, `m${m} k${k} n${n} tA${tA} tB${tB}: ${e}`);
      }
    }
  await assert.rejects(matmul(new Float32Array(5), new Float32Array(6), 2, 3, 2, { rt }), /A: 5 elements, expected 6/);
  await rt.dispose();
});

test('gemmAccumulate: GPTQ lazy update on strided windows, W[:, i2:] -= Err1 · Hinv[i1:i2, i2:]', async () => {
  const rt = await ComputeRuntime.create({ ep: 'cpu', log: () => undefined });
  for (const [rows, cols, i1, i2] of [[1, 3, 0, 1], [7, 17, 3, 10], [129, 127, 0, 64], [17, 129, 100, 128]]) {
    const W = randF32(rows * cols, rows + cols);
    const Hinv = randF32(cols * cols, 2 * cols);
    const err1 = randF32(rows * (i2 - i1), 3);
    const ref = Float64Array.from(W);
    gemmAccumulate_ref({ data: ref, offset: i2, ld: cols }, { data: err1, ld: i2 - i1 }, { data: Hinv, offset: i1 * cols + i2, ld: cols }, rows, i2 - i1, cols - i2);
    await gemmAccumulate({ data: W, offset: i2, ld: cols }, { data: err1, ld: i2 - i1 }, { data: Hinv, offset: i1 * cols + i2, ld: cols }, rows, i2 - i1, cols - i2, { rt });
    const e = relMaxErr(W, ref);
    assert.ok(e < TOL, `${rows}x${cols} [${i1},${i2}): ${e}`);
    // Columns before i2 must be untouched, bit for bit.
    for (let r = 0; r < rows; r++) for (let c = 0; c < i2; c++) assert.equal(W[r * cols + c], Math.fround(ref[r * cols + c]));
  }
  // Contiguous C with alpha = +0.5.
  const c = randF32(3 * 7, 9);
  const ref = Float64Array.from(c);
  const a = randF32(3 * 17, 10);
  const b = randF32(17 * 7, 11);
  gemmAccumulate_ref({ data: ref, ld: 7 }, { data: a, ld: 17 }, { data: b, ld: 7 }, 3, 17, 7, 0.5);
  await gemmAccumulate({ data: c, ld: 7 }, { data: a, ld: 17 }, { data: b, ld: 7 }, 3, 17, 7, { alpha: 0.5, rt });
  assert.ok(relMaxErr(c, ref) < TOL);
  await rt.dispose();
});

test('XᵀX accumulation, in place and through the device-resident accumulator', async () => {
  const rt = await ComputeRuntime.create({ ep: 'cpu', log: () => undefined });
  for (const n of SIZES) {
    const h = new Float32Array(n * n);
    const ref = new Float64Array(n * n);
    const acc = await HessianAccumulator.create(n, rt);
    let seen = 0;
    for (const tokens of [1, 7, 129]) {
      const x = randF32(tokens * n, n * 1000 + tokens);
      // GPTQ add_batch scaling: H ← H·seen/(seen+t) + (2/(seen+t))·XᵀX
      const beta = seen / (seen + tokens);
      const alpha = 2 / (seen + tokens);
      seen += tokens;
      await accumulateXtX(h, x, tokens, n, { alpha, beta, rt });
      await acc.add(x, tokens, alpha, beta);
      accumulateXtX_ref(ref, x, tokens, n, alpha, beta);
    }
    assert.ok(relMaxErr(h, ref) < TOL, `n=${n}: ${relMaxErr(h, ref)}`);
    assert.deepEqual(await acc.result(), h);
  }
  await rt.dispose();
});
