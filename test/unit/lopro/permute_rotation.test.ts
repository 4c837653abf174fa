import { test } from 'node:test';
import assert from 'node:assert/strict';
import { argsortDescending, columnImportance, gatherColumns, gatherVector, invertPermutation, permuteSymmetric, permutationMatrix_ref } from '../../../src/engine/quant/permute';
import {
  fwhtNormalizedInPlace,
  hadamardMatrix_ref,
  planBlocks,
  planRotation,
  rotateColumns,
  rotateHessian,
  rotateVector,
  rotationMatrix_ref,
  unrotateColumns,
} from '../../../src/engine/quant/rotation';
import { SeededRng, matmul, transpose } from '../../../src/engine/quant/lopro_mat';
import { proxyLoss } from '../../../src/engine/quant/gptq';

const gauss = (n: number, seed: number) => {
  const rng = new SeededRng(seed);
  return Float64Array.from({ length: n }, () => rng.gaussian());
};
const maxDiff = (a: ArrayLike<number>, b: ArrayLike<number>) => {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
};
function spd(n: number, seed: number): Float64Array {
  const B = gauss(n * (n + 5), seed);
  const Bt = transpose(B, n + 5, n);
  return matmul(Bt, B, n, n + 5, n);
}

test('importance = H_jj / (mean_i |R_ij| + ε); argsort descending is stable; invPerm inverts', () => {
  const R = Float64Array.from([1, -2, 0, 3, 2, 0]); // 2×3
  const imp = columnImportance([4, 4, 1], R, 2, 3);
  assert.ok(Math.abs(imp[0] - 4 / 2) < 1e-6 && Math.abs(imp[1] - 4 / 2) < 1e-6);
  assert.ok(imp[2] > 1e6); // all-zero column: finite but huge
  assert.ok(Number.isFinite(imp[2]));
  assert.deepEqual(Array.from(argsortDescending([1, 3, 3, 2])), [1, 2, 3, 0]);
  const perm = argsortDescending(gauss(37, 1));
  const inv = invertPermutation(perm);
  for (let k = 0; k < 37; k++) assert.equal(inv[perm[k]], k);
  assert.throws(() => invertPermutation([0, 0, 1]), /not a permutation/);
});

test('column gather = R·P (dense ref), H_p = Pᵀ·H·P, and the inverse permutation undoes both (odd sizes)', () => {
  for (const [m, n] of [
    [3, 7],
    [17, 33],
    [1, 129],
  ]) {
    const R = gauss(m * n, m + n),
      H = spd(n, n);
    const perm = argsortDescending(gauss(n, 5 * n)),
      inv = invertPermutation(perm);
    const P = permutationMatrix_ref(perm);
    const Rp = gatherColumns(R, m, n, perm);
    assert.equal(maxDiff(Rp, matmul(R, P, m, n, n)), 0);
    const Hp = permuteSymmetric(H, n, perm);
    assert.equal(maxDiff(Hp, matmul(matmul(transpose(P, n, n), H, n, n, n), P, n, n, n)), 0);
    assert.deepEqual(gatherColumns(Rp, m, n, inv), R);
    assert.deepEqual(permuteSymmetric(Hp, n, inv), H);
    const x = gauss(n, 3);
    assert.deepEqual(
      Array.from(gatherVector(x, perm)),
      Array.from(perm, (p) => x[p]),
    );
  }
});

test('Sylvester Hadamard: H_b·H_bᵀ = b·I, symmetric; normalised FWHT equals the dense matrix and is its own inverse', () => {
  for (const b of [1, 2, 8, 64, 128]) {
    const Hb = hadamardMatrix_ref(b);
    for (let i = 0; i < b; i++)
      for (let j = 0; j < b; j++) {
        let s = 0;
        for (let k = 0; k < b; k++) s += Hb[i * b + k] * Hb[j * b + k];
        assert.equal(s, i === j ? b : 0);
        assert.equal(Hb[i * b + j], Hb[j * b + i]);
      }
    const x = gauss(b, b),
      y = x.slice();
    fwhtNormalizedInPlace(y, 0, b);
    const dense = matmul(Hb, x, b, b, 1).map((v) => v / Math.sqrt(b));
    assert.ok(maxDiff(y, dense) < 1e-12, `b=${b}`);
    fwhtNormalizedInPlace(y, 0, b);
    assert.ok(maxDiff(y, x) < 1e-12);
  }
  assert.throws(() => hadamardMatrix_ref(12), /power of two/);
});

test('planRotation: defaults, widths where (n − b_I) % b_H ≠ 0 pick a smaller power of two with a note, none/full', () => {
  assert.deepEqual(planRotation(512, 'partial', 128, 128), { cols: 512, mode: 'partial', salient: 128, block: 128, note: undefined });
  const odd = planRotation(200, 'partial', 128, 128); // 72 = 8·9
  assert.equal(odd.block, 8);
  assert.match(odd.note!, /used b_H = 8/);
  assert.equal(planRotation(1408, 'partial', 128, 128).block, 128); // 1280 = 10·128
  assert.equal(planRotation(384, 'none', 128, 128).block, 0);
  const full = planRotation(384, 'full', 128, 128);
  assert.equal(full.salient, 0);
  assert.equal(full.block, 128);
  assert.equal(planRotation(129, 'partial', 128, 128).block, 0); // 1 column left: nothing rotated
  assert.equal(planRotation(100, 'partial', 128, 128).salient, 100);
  assert.deepEqual(planBlocks(planRotation(384, 'partial', 128, 128)), [
    { start: 0, end: 128, rotated: false },
    { start: 128, end: 256, rotated: true },
    { start: 256, end: 384, rotated: true },
  ]);
  assert.throws(() => planRotation(256, 'partial', 128, 96), /power of two/);
});

test('R′ = R_p·Q and H′ = Qᵀ·H_p·Q match the dense Q; Q·Q = I; round trip ≈ identity; tr(R·H·Rᵀ) invariant', () => {
  for (const [m, n, mode, bI, bH] of [
    [5, 40, 'partial', 8, 16],
    [9, 200, 'partial', 128, 128],
    [3, 64, 'full', 0, 32],
    [4, 24, 'none', 8, 8],
  ] as const) {
    const plan = planRotation(n, mode, bI, bH);
    const Q = rotationMatrix_ref(plan);
    const QQ = matmul(Q, Q, n, n, n);
    for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) assert.ok(Math.abs(QQ[i * n + j] - (i === j ? 1 : 0)) < 1e-12);
    const R = gauss(m * n, n + 1),
      H = spd(n, n + 2);
    const Rt = rotateColumns(R, m, plan);
    assert.ok(maxDiff(Rt, matmul(R, Q, m, n, n)) < 1e-12, `${mode} ${n}`);
    assert.ok(maxDiff(unrotateColumns(Rt, m, plan), R) < 1e-12);
    const Ht = rotateHessian(H, plan);
    const ref = matmul(matmul(transpose(Q, n, n), H, n, n, n), Q, n, n, n);
    assert.ok(maxDiff(Ht, ref) < 1e-9 * n, `${mode} ${n} H′`);
    assert.ok(maxDiff(rotateHessian(Ht, plan), H) < 1e-9 * n);
    const zero = new Float64Array(m * n);
    const a = proxyLoss(R, zero, H, m, n),
      b = proxyLoss(Rt, zero, Ht, m, n);
    assert.ok(Math.abs(a - b) < 1e-10 * Math.abs(a));
    const x = gauss(n, 7);
    assert.ok(maxDiff(rotateVector(x, plan), matmul(transpose(Q, n, n), x, n, n, 1)) < 1e-12);
  }
});
