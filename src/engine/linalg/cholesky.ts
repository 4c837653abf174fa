// Blocked Cholesky on ONNX Runtime (ONNX has no Cholesky op). Two engines share one recursion:
// - 'device' (this file, default on WebGPU): the matrices stay on the device between steps as
//   gpu-buffer tensors; only the leaf blocks cross host↔device.
// - 'host' (cholesky_host.ts, default on CPU and CUDA): f64 working matrix in JS, ORT for the products.
//
// Recursive 2×2 block algorithm producing L and X = L⁻¹ together:
//   [A11  .  ]   (L11, X11) = factor(A11)                  recursion; leaves (≤ `leaf`) in float64 TS
//   [A21 A22 ]   L21 = A21·X11ᵀ ;  S = A22 − L21·L21ᵀ       one ORT call (f32)
//                (L22, X22) = factor(S)                     recursion
//                X21 = −X22·(L21·X11) ; X = [X11 0; X21 X22] one ORT call (f32)
// Everything outside the leaves is a large MatMul, what ORT (and a GPU) does best. The triangular
// operands are cut into up to 4 blocks inside each graph so the zero halves are mostly skipped
// (≈0.8·n³ flops instead of 4n³/3), and only the lower blocks of S are formed (its upper part is never
// read). Products and Schur complements are float32, as in GPTQ (torch factors H in float32); the
// leaves are float64. Per internal node only the leaf blocks cross host↔device.
//
// GPTQ needs U upper with H⁻¹ = UᵀU. With J the reversal permutation: if J·H·J = L·Lᵀ then
// H = R·Rᵀ with R = J·L·J upper, so H⁻¹ = R⁻ᵀ·R⁻¹ and U = R⁻¹ = J·L⁻¹·J: one factorisation plus one
// triangular inverse, no explicit H⁻¹ (better conditioned than cholesky(cholesky_inverse(...))).

import { GraphBuilder, type Value } from '../compute/graph';
import { getRuntime, type ComputeRuntime, type Tensor } from '../compute/runtime';
import { cholLowerBlock, invertLowerBlock } from './cholesky_blocks';
import { factorHostResident } from './cholesky_host';
import { NotPositiveDefiniteError } from './cholesky_ref';

export { NotPositiveDefiniteError };

export interface CholeskyOptions {
  rt?: ComputeRuntime;
  /**
   * Leaf size handled in float64 TypeScript (default 192 for the host engine, 256 for the device engine,
   * the best of 128/192/256/384 on 2 pinned cores at n = 4096; smaller exercises the recursion in tests).
   */
  leaf?: number;
  /**
   * 'device': matrices stay on the device between steps (f32 Schur complements; WebGPU's default).
   * 'host': f64 working matrix in JS, ORT for the products only (cholesky_host.ts; default elsewhere).
   */
  engine?: 'auto' | 'host' | 'device';
}

interface Ctx {
  rt: ComputeRuntime;
  host: boolean;
  leaf: number;
  wantL: boolean;
  /** Maps a pivot index of the working matrix to the caller's index (the flipped case). */
  pivot: (i: number) => number;
}

interface Factor {
  L?: Tensor;
  X: Tensor;
}

/** Lower L with A = L·Lᵀ. */
export async function choleskyLower(aVals: ArrayLike<number>, n: number, opts: CholeskyOptions = {}): Promise<Float64Array> {
  const ctx = await context(opts, true, (i) => i);
  if (ctx.host) {
    const a = Float64Array.from(aVals);
    await factorHostResident({ ...ctx, n, a, x: new Float64Array(n * n) });
    for (let i = 0; i < n; i++) a.fill(0, i * n + i + 1, (i + 1) * n);
    return a;
  }
  const f = await factorHost(ctx, Float32Array.from(aVals), n);
  ctx.rt.release(f.X);
  return toF64(await downloadRelease(ctx.rt, f.L!));
}

/** X = L⁻¹ for the lower Cholesky factor L of A. */
export async function choleskyInverseLower(aVals: ArrayLike<number>, n: number, opts: CholeskyOptions = {}): Promise<Float64Array> {
  const ctx = await context(opts, false, (i) => i);
  if (ctx.host) {
    const w = { ...ctx, n, a: Float64Array.from(aVals), x: new Float64Array(n * n) };
    await factorHostResident(w);
    return w.x;
  }
  const f = await factorHost(ctx, Float32Array.from(aVals), n);
  return toF64(await downloadRelease(ctx.rt, f.X));
}

/** Upper U with H⁻¹ = Uᵀ·U: GPTQ's `Hinv` (same semantics as choleskyInverseUpper_ref). */
export async function choleskyInverseUpper(hVals: ArrayLike<number>, n: number, opts: CholeskyOptions = {}): Promise<Float64Array> {
  const ctx = await context(opts, false, (i) => n - 1 - i);
  if (ctx.host) {
    const last = n * n - 1;
    const u = new Float64Array(n * n);
    for (let i = 0; i <= last; i++) u[last - i] = hVals[i]; // J·H·J: reverse rows and columns
    const w = { ...ctx, n, a: u, x: new Float64Array(n * n) };
    await factorHostResident(w);
    for (let i = 0; i <= last; i++) u[last - i] = w.x[i]; // U = J·X·J (u is free again)
    return u;
  }
  return toF64(await downloadRelease(ctx.rt, await flippedFactor(ctx, hVals, n)));
}

/**
 * GPTQ's Hinv as a float32 [n, n] tensor left on the device (the device engine): the GPTQ column loop
 * slices its rows there, so U never crosses to the host (n = 11008: 485 MB down, then up again row by
 * row). The caller releases it.
 */
export async function choleskyInverseUpperTensor(hVals: ArrayLike<number>, n: number, opts: CholeskyOptions = {}): Promise<Tensor> {
  return flippedFactor(await context({ ...opts, engine: 'device' }, false, (i) => n - 1 - i), hVals, n);
}

/** U = J·X·J where X = L⁻¹ for J·H·J = L·Lᵀ (see the header); H is reversed on the host, X on the device. */
async function flippedFactor(ctx: Ctx, hVals: ArrayLike<number>, n: number): Promise<Tensor> {
  const last = n * n - 1;
  const flipped = new Float32Array(n * n);
  for (let i = 0; i <= last; i++) flipped[last - i] = hVals[i];
  const f = await factorHost(ctx, flipped, n);
  const s = await ctx.rt.session(`chol/flip/${n}`, () => flipModel(n), 'device');
  const u = (await ctx.rt.run(s, { x: f.X })).y;
  ctx.rt.release(f.X);
  return u;
}

async function context(opts: CholeskyOptions, wantL: boolean, pivot: (i: number) => number): Promise<Ctx> {
  const rt = opts.rt ?? (await getRuntime());
  const engine = opts.engine ?? 'auto';
  const host = engine === 'host' || (engine === 'auto' && !rt.keepsDataOnDevice);
  return { rt, host, leaf: Math.max(1, opts.leaf ?? (host ? 192 : 256)), wantL, pivot };
}

async function factorHost(ctx: Ctx, a: Float32Array, n: number): Promise<Factor> {
  if (n <= ctx.leaf) return leafFactor(ctx, a, n, 0);
  return factor(ctx, await ctx.rt.upload(ctx.rt.host(a, [n, n])), n, 0);
}

/** Factor the m×m (device) tensor A, whose first row is row `o` of the whole matrix. Consumes A. */
async function factor(ctx: Ctx, A: Tensor, m: number, o: number): Promise<Factor> {
  const { rt } = ctx;
  if (m <= ctx.leaf) return leafFactor(ctx, await downloadRelease(rt, A), m, o);
  const h = ctx.leaf * Math.ceil(Math.ceil(m / ctx.leaf) / 2); // leaves stay full blocks
  const p = m - h;
  const parts = await rt.run(await rt.session(`chol/split/${h}/${p}`, () => splitModel(h, p), 'device'), { a: A });
  rt.release(A);
  const f1 = await factor(ctx, parts.a11, h, o);
  const r1 = await rt.run(await rt.session(`chol/panel/${h}/${p}`, () => panelModel(h, p), 'device'), { a21: parts.a21, a22: parts.a22, x11: f1.X });
  rt.release(parts.a21, parts.a22);
  const f2 = await factor(ctx, r1.s, p, o + h);
  const r2 = await rt.run(await rt.session(`chol/xinv/${h}/${p}`, () => xinvModel(h, p), 'device'), { x11: f1.X, x22: f2.X, l21: r1.l21 });
  rt.release(f1.X, f2.X);
  let L: Tensor | undefined;
  if (ctx.wantL) {
    L = (await rt.run(await rt.session(`chol/lassemble/${h}/${p}`, () => assembleModel(h, p), 'device'), { t11: f1.L!, t21: r1.l21, t22: f2.L! })).t;
    rt.release(f1.L, f2.L);
  }
  rt.release(r1.l21);
  return { L, X: r2.x };
}

/** Float64 Cholesky + triangular inverse of a small block, results uploaded as f32 tensors. */
async function leafFactor(ctx: Ctx, a32: Float32Array, m: number, o: number): Promise<Factor> {
  const a = Float64Array.from(a32);
  try {
    cholLowerBlock(a, 0, m, m, 0);
  } catch (e) {
    if (e instanceof NotPositiveDefiniteError) throw new NotPositiveDefiniteError(ctx.pivot(o + e.pivotIndex), e.pivotValue);
    throw e;
  }
  const x = new Float64Array(m * m);
  invertLowerBlock(a, 0, x, 0, m, m);
  const X = await ctx.rt.upload(ctx.rt.host(Float32Array.from(x), [m, m]));
  if (!ctx.wantL) return { X };
  for (let i = 0; i < m; i++) a.fill(0, i * m + i + 1, (i + 1) * m);
  return { X, L: await ctx.rt.upload(ctx.rt.host(Float32Array.from(a), [m, m])) };
}

async function downloadRelease(rt: ComputeRuntime, t: Tensor): Promise<Float32Array> {
  const host = await rt.download(t);
  rt.release(t);
  return host;
}

function toF64(a: Float32Array): Float64Array {
  return Float64Array.from(a);
}

// ── graphs (static shapes: one session per (h, p); a factorisation has O(log n) distinct sizes) ──────

/** Up to 4 near-equal blocks of [0, d), at least ~256 wide (smaller GEMMs lose more than they save). */
function blocks(d: number): [number, number][] {
  const k = Math.max(1, Math.min(4, Math.floor(d / 256)));
  const out: [number, number][] = [];
  for (let i = 0; i < k; i++) out.push([Math.round((d * i) / k), Math.round((d * (i + 1)) / k)]);
  return out;
}

function slicer(g: GraphBuilder) {
  return (x: Value, r0: number, r1: number, c0: number, c1: number): Value =>
    g.op('Slice', [x, g.constI64([r0, c0]), g.constI64([r1, c1]), g.constI64([0, 1])]);
}

/** J·X·J: rows and columns reversed (two Gathers). */
function flipModel(n: number): Uint8Array {
  const g = new GraphBuilder('chol_flip');
  const rev = g.constI64(Array.from({ length: n }, (_, i) => n - 1 - i));
  const x = g.input('x', 'float32', [n, n]);
  g.output(g.op('Gather', [g.op('Gather', [x, rev], { axis: 0 }), rev], { axis: 1 }), 'y');
  return g.toModel();
}

function splitModel(h: number, p: number): Uint8Array {
  const g = new GraphBuilder('chol_split');
  const sl = slicer(g);
  const a = g.input('a', 'float32', [h + p, h + p]);
  g.output(sl(a, 0, h, 0, h), 'a11');
  g.output(sl(a, h, h + p, 0, h), 'a21');
  g.output(sl(a, h, h + p, h, h + p), 'a22');
  return g.toModel();
}

/** L21 = A21·X11ᵀ (X11 lower: column block j of the result needs only X11's first e_j columns);
 *  S = A22 − L21·L21ᵀ, lower block rows only (the strict upper part of S is left zero). */
function panelModel(h: number, p: number): Uint8Array {
  const g = new GraphBuilder('chol_panel');
  const sl = slicer(g);
  const a21 = g.input('a21', 'float32', [p, h]);
  const a22 = g.input('a22', 'float32', [p, p]);
  const x11 = g.input('x11', 'float32', [h, h]);
  // A·Bᵀ as MatMul(A, Transpose(B)): Gemm(transB=1) runs at a third of MatMul's speed on the WebGPU EP (bench/ep_profile.ts).
  const mmT = (a: Value, b: Value) => g.op('MatMul', [a, g.op('Transpose', [b], { perm: [1, 0] })]);
  const cols = blocks(h).map(([s, e]) => mmT(sl(a21, 0, p, 0, e), sl(x11, s, e, 0, e)));
  const l21 = cols.length === 1 ? cols[0] : g.op('Concat', cols, { axis: 1 });
  g.output(l21, 'l21');
  const rows = blocks(p).map(([s, e]) => {
    const si = g.op('Sub', [sl(a22, s, e, 0, e), mmT(sl(l21, s, e, 0, h), sl(l21, 0, e, 0, h))]);
    return e === p ? si : g.op('Pad', [si, g.constI64([0, 0, 0, p - e])]);
  });
  g.output(rows.length === 1 ? rows[0] : g.op('Concat', rows, { axis: 0 }), 's');
  return g.toModel();
}

/** T = L21·X11 (column block j of X11 is zero above row s_j); X21 = −X22·T (row block i of X22 is zero
 *  right of e_i); X = [X11 0; X21 X22]. */
function xinvModel(h: number, p: number): Uint8Array {
  const g = new GraphBuilder('chol_xinv');
  const sl = slicer(g);
  const x11 = g.input('x11', 'float32', [h, h]);
  const x22 = g.input('x22', 'float32', [p, p]);
  const l21 = g.input('l21', 'float32', [p, h]);
  const tCols = blocks(h).map(([s, e]) => g.op('MatMul', [sl(l21, 0, p, s, h), sl(x11, s, h, s, e)]));
  const t = tCols.length === 1 ? tCols[0] : g.op('Concat', tCols, { axis: 1 });
  const xRows = blocks(p).map(([s, e]) => g.op('Gemm', [sl(x22, s, e, 0, e), sl(t, 0, e, 0, h)], { alpha: -1 }));
  const x21 = xRows.length === 1 ? xRows[0] : g.op('Concat', xRows, { axis: 0 });
  g.output(assemble(g, x11, x21, x22, p), 'x');
  return g.toModel();
}

function assembleModel(h: number, p: number): Uint8Array {
  const g = new GraphBuilder('chol_assemble');
  const t11 = g.input('t11', 'float32', [h, h]);
  const t21 = g.input('t21', 'float32', [p, h]);
  const t22 = g.input('t22', 'float32', [p, p]);
  g.output(assemble(g, t11, t21, t22, p), 't');
  return g.toModel();
}

/** [T11 0; T21 T22] for lower-triangular blocks. */
function assemble(g: GraphBuilder, t11: Value, t21: Value, t22: Value, p: number): Value {
  const top = g.op('Pad', [t11, g.constI64([0, 0, 0, p])]);
  return g.op('Concat', [top, g.op('Concat', [t21, t22], { axis: 1 })], { axis: 0 });
}
