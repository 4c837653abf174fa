import { test } from 'node:test';
import assert from 'node:assert/strict';
import { choleskyInverseUpper } from '../../../src/engine/quant/gptq_linalg';
import { choleskyInverseUpper_ref } from '../../../src/engine/linalg/cholesky_ref';
import { HessianAccumulator } from '../../../src/engine/quant/hessian';
import { syntheticActivations } from './synthetic';

test('choleskyInverseUpper (reversed Cholesky + one triangular inverse) = the reference three-step U', () => {
  for (const n of [1, 2, 3, 5, 17, 33, 64, 129, 300]) {
    const acc = new HessianAccumulator(n);
    acc.add(syntheticActivations(2 * n + 3, n, n), 2 * n + 3, 2);
    const H = acc.finish();
    for (let i = 0; i < n; i++) H[i * n + i] += 0.01;
    const U = choleskyInverseUpper(H, n),
      R = choleskyInverseUpper_ref(H, n);
    let m = 0,
      mx = 0;
    for (let i = 0; i < n * n; i++) {
      m = Math.max(m, Math.abs(U[i] - R[i]));
      mx = Math.max(mx, Math.abs(R[i]));
    }
    assert.ok(m <= 1e-10 * mx, `n=${n}: rel ${m / mx}`); // measured ≤ 2e-15
    for (let a = 0; a < n; a++) for (let b = 0; b < a; b++) assert.equal(U[a * n + b], 0);
  }
});

test('a non-positive-definite H throws NotPositiveDefiniteError (which gptqQuantize turns into the RTN fallback)', () => {
  assert.throws(
    () => choleskyInverseUpper([1, 2, 2, 1], 2),
    (e: unknown) => e instanceof Error && e.name === 'NotPositiveDefiniteError',
  );
});
