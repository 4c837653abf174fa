// Blocked Cholesky on ONNX Runtime (ONNX has no Cholesky op).
//
// Recursive 2×2 block algorithm that produces L and X = L⁻¹ together:
//   [A11  .  ]   L11 X11 = chol/inv(A11)                    (recursion; leaves in float64 TypeScript)
//   [A21 A22 ]   L21 = A21·X11ᵀ                             (ORT MatMul, f32)
//                A22 ← A22 − L21·L21ᵀ  (product on ORT, subtraction in f64)
//                L22 X22 = chol/inv(A22)                     (recursion)
//                X21 = −X22·(L21·X11)                        (ORT MatMul, f32)
// Every flop outside the small leaves is a large MatMul, which is what ORT (and a GPU) does well: about
// 4n³/3 flops in all (vs 2n³/3 minimum), traded for ~2 ORT calls per internal node and no small solves.
// The working matrix and the results stay float64; only the products are float32 (as in GPTQ, whose
// reference factors H in float32 with torch).
//
// GPTQ needs U upper with H⁻¹ = UᵀU. With J the reversal permutation: if J·H·J = L·Lᵀ then
// H = R·Rᵀ with R = J·L·J upper, so H⁻¹ = R⁻ᵀ·R⁻¹ and U = R⁻¹ = J·L⁻¹·J. One factorisation plus one
// triangular inverse, and no explicit H⁻¹ (better conditioned than cholesky(cholesky_inverse(...))).

import { GraphBuilder } from '../compute/graph';
import { getRuntime, type ComputeRuntime } from '../compute/runtime';
import { cholLowerBlock, invertLowerBlock, packF32, subtractLowerF32, unpackF32 } from './cholesky_blocks';
import { NotPositiveDefiniteError } from './cholesky_ref';

export { NotPositiveDefiniteError };

export interface CholeskyOptions {
  rt?: ComputeRuntime;
  /** Leaf size handled in float64 TypeScript (default 256; smaller exercises the recursion in tests). */
  leaf?: number;
}

interface Work {
  rt: ComputeRuntime;
  n: number;
  leaf: number;
  /** Working copy of the input; its lower triangle is overwritten with L. */
  a: Float64Array;
  /** L⁻¹ (lower triangle; the strict upper triangle stays zero). */
  x: Float64Array;
  /** Maps a pivot index of the working matrix back to the caller's index (for the flipped case). */
  pivot: (i: number) => number;
}

/** Lower L with A = L·Lᵀ (same result as choleskyLower_ref, products in f32). */
export async function choleskyLower(aVals: ArrayLike<number>, n: number, opts: CholeskyOptions = {}): Promise<Float64Array> {
  const a = Float64Array.from(aVals as ArrayLike<number>);
  const w: Work = { rt: opts.rt ?? (await getRuntime()), n, leaf: opts.leaf ?? 256, a, x: new Float64Array(n * n), pivot: (i) => i };
  await factor(w, 0, n);
  for (let i = 0; i < n; i++) a.fill(0, i * n + i + 1, (i + 1) * n);
  return a;
}

/** L⁻¹ for the lower Cholesky factor of A (blocked, with L computed on the way). */
export async function choleskyInverseLower(aVals: ArrayLike<number>, n: number, opts: CholeskyOptions = {}): Promise<Float64Array> {
  const w: Work = { rt: opts.rt ?? (await getRuntime()), n, leaf: opts.leaf ?? 256, a: Float64Array.from(aVals as ArrayLike<number>), x: new Float64Array(n * n), pivot: (i) => i };
  await factor(w, 0, n);
  return w.x;
}

/** Upper U with H⁻¹ = Uᵀ·U: GPTQ's `Hinv` (same semantics as choleskyInverseUpper_ref). */
export async function choleskyInverseUpper(hVals: ArrayLike<number>, n: number, opts: CholeskyOptions = {}): Promise<Float64Array> {
  const a = new Float64Array(n * n);
  const last = n * n - 1;
  for (let i = 0; i < n * n; i++) a[last - i] = hVals[i]; // J·H·J: reverse rows and columns
  const w: Work = { rt: opts.rt ?? (await getRuntime()), n, leaf: opts.leaf ?? 256, a, x: new Float64Array(n * n), pivot: (i) => n - 1 - i };
  await factor(w, 0, n);
  const u = a; // reuse the working buffer: U = J·X·J
  const x = w.x;
  for (let i = 0; i < n * n; i++) u[last - i] = x[i];
  return u;
}

/** Factor the diagonal block [o, o+m): lower triangle of `a` becomes L, `x` gets L⁻¹. */
async function factor(w: Work, o: number, m: number): Promise<void> {
  const { n, a, x } = w;
  if (m <= w.leaf) {
    const off = o * n + o;
    try {
      cholLowerBlock(a, off, n, m, o);
    } catch (e) {
      if (e instanceof NotPositiveDefiniteError) throw new NotPositiveDefiniteError(w.pivot(e.pivotIndex), e.pivotValue);
      throw e;
    }
    invertLowerBlock(a, off, x, off, n, m);
    return;
  }
  // Split on a multiple of the leaf size so the leaves are full blocks (the last one may be short).
  const h = w.leaf * Math.ceil(Math.ceil(m / w.leaf) / 2);
  const p = m - h;
  await factor(w, o, h);
  const a21 = packF32(a, n, o + h, o, p, h);
  const x11 = packF32(x, n, o, o, h, h);
  const s1 = await w.rt.session('chol/panel', panelModel);
  const r1 = await w.rt.run(s1, { a21: w.rt.host(a21, [p, h]), x11: w.rt.host(x11, [h, h]) });
  const l21 = r1.l21;
  const l21Host = await w.rt.download(l21);
  unpackF32(l21Host, a, n, o + h, o, p, h); // L21 into the lower triangle of a
  subtractLowerF32(a, n, o + h, await w.rt.download(r1.p), p);
  w.rt.release(r1.p);
  await factor(w, o + h, p);
  const x22 = packF32(x, n, o + h, o + h, p, p);
  const s2 = await w.rt.session('chol/xinv', xinvModel);
  const r2 = await w.rt.run(s2, { x22: w.rt.host(x22, [p, p]), l21, x11: w.rt.host(x11, [h, h]) });
  unpackF32(await w.rt.download(r2.x21), x, n, o + h, o, p, h);
  w.rt.release(l21, r2.x21);
}

/** L21 = A21·X11ᵀ and P = L21·L21ᵀ. */
function panelModel(): Uint8Array {
  const g = new GraphBuilder('chol_panel');
  const a21 = g.input('a21', 'float32', ['P', 'H']);
  const x11 = g.input('x11', 'float32', ['H', 'H']);
  const l21 = g.op('Gemm', [a21, x11], { transB: 1 });
  g.output(l21, 'l21');
  g.output(g.op('Gemm', [l21, l21], { transB: 1 }), 'p');
  return g.toModel();
}

/** X21 = −X22·(L21·X11). */
function xinvModel(): Uint8Array {
  const g = new GraphBuilder('chol_xinv');
  const x22 = g.input('x22', 'float32', ['P', 'P']);
  const l21 = g.input('l21', 'float32', ['P', 'H']);
  const x11 = g.input('x11', 'float32', ['H', 'H']);
  g.output(g.op('Gemm', [x22, g.op('MatMul', [l21, x11])], { alpha: -1 }), 'x21');
  return g.toModel();
}
