// Walsh–Hadamard: butterflies vs the dense float64 reference, self-inverse, row/column duality.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { blockHadamardColumns, blockHadamardColumns_ref, blockHadamardRows, fwht, hadamardMatrix } from '../../../src/engine/linalg/fwht';
import { randF32, randF64, relMaxErr } from '../compute/_seeded';

const ROWS = [1, 3, 7, 17, 127, 129];

test('normalised Sylvester matrix is symmetric and orthogonal (H·Hᵀ = I)', () => {
  for (const b of [1, 2, 8, 128]) {
    const H = hadamardMatrix(b);
    for (let i = 0; i < b; i++)
      for (let j = 0; j < b; j++) {
        assert.equal(H[i * b + j], H[j * b + i]);
        let s = 0;
        for (let k = 0; k < b; k++) s += H[i * b + k] * H[j * b + k];
        assert.ok(Math.abs(s - (i === j ? 1 : 0)) < 1e-12);
      }
  }
});

test('fwht equals the dense product and is its own inverse', () => {
  for (const b of [1, 2, 4, 64, 256]) {
    const x = randF64(b, b);
    const y = Float64Array.from(x);
    fwht(y, 0, b);
    const ref = blockHadamardColumns_ref(x, 1, b, 0, b);
    assert.ok(relMaxErr(y, ref) < 1e-12, `b=${b}`);
    fwht(y, 0, b);
    assert.ok(relMaxErr(y, x) < 1e-12);
  }
});

test('blockHadamardColumns leaves the first `start` columns alone; rows version = transpose of columns version', () => {
  for (const rows of ROWS)
    for (const [start, b, k] of [
      [0, 4, 3],
      [5, 8, 2],
      [128, 128, 1],
    ] as const) {
      const cols = start + k * b;
      const R = randF32(rows * cols, rows * 31 + cols);
      const ref = blockHadamardColumns_ref(R, rows, cols, start, b);
      const got = Float32Array.from(R);
      blockHadamardColumns(got, rows, cols, start, b);
      assert.ok(relMaxErr(got, ref) < 1e-6, `rows ${rows} cols ${cols}`); // f32 butterflies: measured ~1e-7
      for (let r = 0; r < rows; r++) for (let c = 0; c < start; c++) assert.equal(got[r * cols + c], R[r * cols + c]);
      // Transpose, transform rows, transpose back: same as transforming columns.
      const T = new Float64Array(rows * cols);
      for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) T[c * rows + r] = R[r * cols + c];
      blockHadamardRows(T, cols, rows, start, b);
      const back = new Float64Array(rows * cols);
      for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) back[r * cols + c] = T[c * rows + r];
      assert.ok(relMaxErr(back, ref) < 1e-12);
    }
});

test('bad block sizes are rejected with a config error', () => {
  assert.throws(() => blockHadamardColumns(new Float32Array(12), 1, 12, 0, 3), /not a power of two/);
  assert.throws(() => blockHadamardColumns(new Float32Array(12), 1, 12, 2, 4), /not a multiple of the Hadamard block 4/);
});

test('blockHadamardColumns on two-column blocks and an odd start, and a matrix with nothing after start', () => {
  // The shapes the removed ORT variant was checked on (b = 2, start 7), now on the TypeScript butterflies.
  for (const rows of ROWS)
    for (const [start, b, k] of [
      [0, 2, 5],
      [7, 16, 3],
      [128, 128, 2],
    ] as const) {
      const cols = start + k * b;
      const R = randF32(rows * cols, rows + 7 * cols);
      const got = Float32Array.from(R);
      blockHadamardColumns(got, rows, cols, start, b);
      const e = relMaxErr(got, blockHadamardColumns_ref(R, rows, cols, start, b));
      assert.ok(e < 1e-6, `rows ${rows} start ${start} b ${b}: ${e}`); // f32 butterflies: measured ~1e-7
    }
  const same = randF32(6, 1),
    got = Float32Array.from(same);
  blockHadamardColumns(got, 2, 3, 3, 4);
  assert.deepEqual(got, same); // nothing after start
});
