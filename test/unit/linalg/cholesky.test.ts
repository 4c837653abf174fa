// Blocked ORT Cholesky vs the float64 references, at odd sizes and with small leaves so the
// recursion (and its uneven splits) is exercised.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { choleskyInverseLower, choleskyInverseUpper, choleskyInverseUpperTensor, choleskyLower, NotPositiveDefiniteError } from '../../../src/engine/linalg/cholesky';
import { choleskyInverseUpper_ref, choleskyLower_ref, invertLower_ref } from '../../../src/engine/linalg/cholesky_ref';
import { cholLowerBlock, invertLowerBlock } from '../../../src/engine/linalg/cholesky_blocks';
import { ComputeRuntime } from '../../../src/engine/compute/runtime';
import { randSpd, relMaxErr } from '../compute/_seeded';

const SIZES = [1, 3, 7, 17, 127, 129];

test('float64 block kernels equal the references (no ORT involved)', () => {
  for (const n of SIZES) {
    const h = randSpd(n, n);
    const a = Float64Array.from(h);
    cholLowerBlock(a, 0, n, n);
    const lRef = choleskyLower_ref(h, n);
    const x = new Float64Array(n * n);
    invertLowerBlock(a, 0, x, 0, n, n);
    for (let i = 0; i < n; i++) for (let j = i + 1; j < n; j++) a[i * n + j] = 0;
    assert.ok(relMaxErr(a, lRef) < 1e-12, `n=${n} L`);
    assert.ok(relMaxErr(x, invertLower_ref(lRef, n)) < 1e-9, `n=${n} Linv`);
  }
});

for (const engine of ['host', 'device'] as const)
test(`${engine} engine: choleskyLower / inverse lower / inverse upper vs refs (leaf 8 and 32)`, async () => {
  const rt = await ComputeRuntime.create({ ep: 'cpu', log: () => undefined });
  // The device engine bakes sizes into its graphs (one session per split), so it gets fewer cases.
  const cases = engine === 'host' ? ([[8, [1, 3, 7, 17, 67]], [32, [127, 129, 300]]] as const) : ([[8, [1, 3, 17, 40]], [32, [129, 300]]] as const);
  for (const [leaf, sizes] of cases) {
    for (const n of sizes) {
      const h = randSpd(n, 100 + n);
      const lRef = choleskyLower_ref(h, n);
      const l = await choleskyLower(h, n, { rt, leaf, engine });
      const eL = relMaxErr(l, lRef);
      assert.ok(eL < 1e-5, `leaf ${leaf} n=${n}: L rel err ${eL}`); // measured ≤ 2e-7
      const xi = await choleskyInverseLower(h, n, { rt, leaf, engine });
      const eX = relMaxErr(xi, invertLower_ref(lRef, n));
      assert.ok(eX < 1e-4, `leaf ${leaf} n=${n}: L⁻¹ rel err ${eX}`);
      const u = await choleskyInverseUpper(h, n, { rt, leaf, engine });
      const eU = relMaxErr(u, choleskyInverseUpper_ref(h, n));
      assert.ok(eU < 1e-4, `leaf ${leaf} n=${n}: U rel err ${eU}`);
      for (let i = 0; i < n; i++) for (let j = 0; j < i; j++) assert.equal(u[i * n + j], 0);
      if (engine === 'device') {
        // The tensor the GPTQ loop slices on the device: the same U (flipped there, not on the host).
        const ut = await choleskyInverseUpperTensor(h, n, { rt, leaf });
        assert.deepEqual(ut.dims, [n, n]);
        assert.deepEqual(Float64Array.from(await rt.download(ut)), u);
        rt.release(ut);
      }
    }
  }
  await rt.dispose();
});

for (const engine of ['host', 'device'] as const)
test(`${engine} engine: not positive definite: error names the pivot in the caller's indexing`, async () => {
  const rt = await ComputeRuntime.create({ ep: 'cpu', log: () => undefined });
  const n = 40;
  const h = randSpd(n, 7);
  h[37 * n + 37] = -1; // breaks PD at pivot 37 (or earlier, never later)
  await assert.rejects(choleskyLower(h, n, { rt, leaf: 8, engine }), (e: unknown) => e instanceof NotPositiveDefiniteError && e.pivotIndex <= 37);
  // Reversed order for the upper factor: the bad pivot is met first, and reported as index 37.
  await assert.rejects(choleskyInverseUpper(h, n, { rt, leaf: 8, engine }), (e: unknown) => e instanceof NotPositiveDefiniteError && e.pivotIndex === 37);
  await rt.dispose();
});
