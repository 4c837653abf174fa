// WGSL kernels of the GPU backend's layer operations (gpu_backend.ts). All float32, row-major; an n×n matrix
// wider than one binding is read and written through split.ts's ld_/st_ in parts.
// Each has a float64 twin on the host that the tests compare the backend against:
//   elementwise  — A = W·diag(a) (r1svd.ts scaleColumns); R = W ∓ (Us·V)·diag(inv) (lowRankWeight + the
//                  residual; also Ŵ += W_r in place); Y[s] = X[s·step] row sampling (the layer view's rows)
//   colSlabs     — Σ_i |X_ij| or Σ_i X_ij² per column over 64-row slabs (permute.ts columnImportance; ‖A‖²;
//                  the host adds the slabs in float64)
//   blockRotate  — a gather (by perm, or a transpose) then the normalised FWHT of every b-wide column
//                  block (linalg/fwht.ts), or the dequantization + FWHT + scatter of the stored residual
//                  (lopro_dequant.ts); the unrotated head of b_I columns goes through the same kernel with b = 1
//   symmetrize   — X ← (X + Xᵀ)/2 (rotation.ts rotateHessian's last step)
//   diag / nonFinite — H's diagonal out/in (damping, dead columns: quant/gptq.ts), the first
//                  flat index of a value that is not finite (NaN/±Inf as float32 bits)
//   rowDot       — Σ_j A_ij·B_ij per row (the proxy losses tr(D·H·Dᵀ) after the GEMM D·H; gptq_kernels.ts proxyLoss)
//   sub          — Y = X − Z (D = W − Ŵ)

import { splitVar } from './split';

/** u32 words of every kernel's uniform block (padded to 8). */
export const P_WORDS = 8;

/** Grid for `total` elementwise items: x ≤ 65535 workgroups of 256, the kernels stride over the rest. */
export function strideGroups(total: number): { groups: number; stride: number } {
  const groups = Math.max(1, Math.min(65535, Math.ceil(total / 256)));
  return { groups, stride: groups * 256 };
}

const ELEM_HEAD = 'struct P { m: u32, n: u32, r: u32, stride: u32, total: u32, step: u32, sign: f32, pad: u32 }';

/** Y = X·diag(a)  (bindings: P, X, a, Y). */
export const SCALE_COLS_WGSL = /* wgsl */ `
${ELEM_HEAD}
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> X: array<f32>;
@group(0) @binding(2) var<storage, read> a: array<f32>;
@group(0) @binding(3) var<storage, read_write> Y: array<f32>;
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) g: vec3u) {
  for (var idx = g.x; idx < p.total; idx += p.stride) { Y[idx] = X[idx] * a[idx % p.n]; }
}
`;

/**
 * Low-rank term L_ij = (Σ_k Us[i, k]·V[k, j])·inv[j] (Us = U·diag(σ̂), m×r; V r×n). inPlace: Y += sign·L
 * (bindings P, Us, V, inv, Y); else Y = X + sign·L (bindings P, Us, V, inv, Y, X).
 */
export function lowRankApplyWgsl(inPlace: boolean): string {
  return /* wgsl */ `
${ELEM_HEAD}
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> Us: array<f32>;
@group(0) @binding(2) var<storage, read> V: array<f32>;
@group(0) @binding(3) var<storage, read> inv: array<f32>;
@group(0) @binding(4) var<storage, read_write> Y: array<f32>;
${inPlace ? '' : '@group(0) @binding(5) var<storage, read> X: array<f32>;'}
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) g: vec3u) {
  for (var idx = g.x; idx < p.total; idx += p.stride) {
    let i = idx / p.n;
    let j = idx % p.n;
    var s = 0.0;
    for (var k = 0u; k < p.r; k++) { s = fma(Us[i * p.r + k], V[k * p.n + j], s); }
    Y[idx] = ${inPlace ? 'Y[idx]' : 'X[idx]'} + p.sign * (s * inv[j]);
  }
}
`;
}

/** Y[s, :] = X[s·step, :] for s < total / n (bindings P, X, Y). */
export const SAMPLE_ROWS_WGSL = /* wgsl */ `
${ELEM_HEAD}
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> X: array<f32>;
@group(0) @binding(2) var<storage, read_write> Y: array<f32>;
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) g: vec3u) {
  for (var idx = g.x; idx < p.total; idx += p.stride) { Y[idx] = X[(idx / p.n) * p.step * p.n + idx % p.n]; }
}
`;

/** Y (h×w) = X[r0 : r0+h, c0 : c0+w] of an n-column X (bindings P, X, Y; P.m = h, P.n = w, P.r = n, P.step = r0·n + c0). */
export const SUBMATRIX_WGSL = /* wgsl */ `
${ELEM_HEAD}
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> X: array<f32>;
@group(0) @binding(2) var<storage, read_write> Y: array<f32>;
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) g: vec3u) {
  for (var idx = g.x; idx < p.total; idx += p.stride) { Y[idx] = X[p.step + (idx / p.n) * p.r + idx % p.n]; }
}
`;

/** Rows per slab of colReduce's first pass. */
export const SLAB = 64;

/** part[s, j] = Σ_{i in slab s} f(X[i, j]), f = |x| or x² (bindings P, X, part); dispatch (⌈n/256⌉, slabs). */
export function colSlabsWgsl(f: 'abs' | 'sq'): string {
  return /* wgsl */ `
${ELEM_HEAD}
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> X: array<f32>;
@group(0) @binding(2) var<storage, read_write> part: array<f32>;
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) l: u32) {
  let j = wg.x * 256u + l;
  if (j >= p.n) { return; }
  let i0 = wg.y * ${SLAB}u;
  let i1 = min(p.m, i0 + ${SLAB}u);
  var s = 0.0;
  for (var i = i0; i < i1; i++) { let x = X[i * p.n + j]; s += ${f === 'abs' ? 'abs(x)' : 'x * x'}; }
  part[wg.y * p.n + j] = s;
}
`;
}

/** status[0] = min flat index whose value is NaN or ±Inf (bits), untouched when all are finite (bindings P, X in parts `starts`, status). */
export function nonFiniteWgsl(starts: readonly number[]): string {
  return /* wgsl */ `
${ELEM_HEAD}
@group(0) @binding(0) var<uniform> p: P;
${splitVar('X', 1, starts, 'read', 'u32')}
@group(0) @binding(2) var<storage, read_write> status: array<atomic<u32>>;
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) g: vec3u) {
  for (var idx = g.x; idx < p.total; idx += p.stride) {
    if ((ld_X(idx) & 0x7f800000u) == 0x7f800000u) { atomicMin(&status[0], idx); }
  }
}
`;
}

/** X ← (X + Xᵀ)/2 on an n×n matrix in parts `starts`, each pair by the thread of its upper element (bindings P, X). */
export function symmetrizeWgsl(starts: readonly number[]): string {
  return /* wgsl */ `
${ELEM_HEAD}
@group(0) @binding(0) var<uniform> p: P;
${splitVar('X', 1, starts, 'read_write')}
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) g: vec3u) {
  for (var idx = g.x; idx < p.total; idx += p.stride) {
    let i = idx / p.n;
    let j = idx % p.n;
    if (i < j) {
      let v = 0.5 * (ld_X(i * p.n + j) + ld_X(j * p.n + i));
      st_X(i * p.n + j, v);
      st_X(j * p.n + i, v);
    }
  }
}
`;
}

/** get: d[j] = X[j, j]; set: X[j, j] = d[j] (bindings P, X in parts `starts`, d). */
export function diagWgsl(dir: 'get' | 'set', starts: readonly number[] = [0]): string {
  return /* wgsl */ `
${ELEM_HEAD}
@group(0) @binding(0) var<uniform> p: P;
${splitVar('X', 1, starts, dir === 'get' ? 'read' : 'read_write')}
@group(0) @binding(2) var<storage, ${dir === 'get' ? 'read_write' : 'read'}> d: array<f32>;
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) g: vec3u) {
  let j = g.x;
  if (j >= p.n) { return; }
  ${dir === 'get' ? 'd[j] = ld_X(j * p.n + j);' : 'st_X(j * p.n + j, d[j]);'}
}
`;
}

/** X[i, cols[t]] = 0 for every row i = P.step + workgroup_id.y and t < r (dead columns of W′; bindings P, X, cols); dispatch (⌈r/256⌉, rows ≤ 65535 from row P.step). */
export const ZERO_COLS_WGSL = /* wgsl */ `
${ELEM_HEAD}
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read_write> X: array<f32>;
@group(0) @binding(2) var<storage, read> cols: array<u32>;
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) l: u32) {
  let t = wg.x * 256u + l;
  if (t >= p.r) { return; }
  X[(p.step + wg.y) * p.n + cols[t]] = 0.0;
}
`;

/**
 * Where blockRotate reads element (i, k) of its input and writes it:
 * gatherR — X[i, perm[k]] → Y[i, k] (R′ = R_p·Q);  gatherH — X[perm[i], perm[k]] → Y[i, k] (H_p·Q);
 * transpose — X[k, i] → Y[i, k] (then (H_p·Q)ᵀ·Q = Q·H_p·Q); dequant — the stored code (i, k) of the
 * rotated residual, s·(code − z) with its group's (gi[k]) FP16-rounded scale and zero → Y[i, perm[k]] (R̂ = (R̂′·Q)[:, perm⁻¹]);
 * unrotate — X[i, k] → Y[i, perm[k]] (the same for an R̂′ decoded elsewhere: lopro_v's codebook entries).
 */
export type RotateMode = 'gatherR' | 'gatherH' | 'transpose' | 'dequant' | 'unrotate';

const RP = 'struct P { n: u32, k0: u32, scaleBits: u32, wpr: u32, G: u32, row0: u32, pad1: u32, pad2: u32 }';
const DEQUANT_BINDINGS =
  '@group(0) @binding(4) var<storage, read> sc: array<f32>;\n@group(0) @binding(5) var<storage, read> zr: array<f32>;\n@group(0) @binding(6) var<storage, read> gi: array<u32>;';

/**
 * One workgroup per (row i = P.row0 + workgroup_id.y, block c = workgroup_id.x): the b values of columns
 * k0 + c·b … k0 + c·b + b − 1 are loaded (mode), transformed by the normalised FWHT (b ≥ 2; b = 1 copies,
 * for the unrotated head) in workgroup memory, and stored (mode). Bindings: P, X (u32 codes for
 * dequant, f32 otherwise), perm (u32; unused by transpose), Y, and for dequant the scales and zeros (rows × G)
 * and the group of every column.
 */
export function blockRotateWgsl(mode: RotateMode, b: number, parts: { x: readonly number[]; y: readonly number[] } = { x: [0], y: [0] }): string {
  const T = Math.min(256, b === 1 ? 256 : b);
  const load = {
    gatherR: 'ld_X(i * p.n + perm[k])',
    gatherH: 'ld_X(perm[i] * p.n + perm[k])',
    transpose: 'ld_X(k * p.n + i)',
    dequant: 'sc[i * p.G + gi[k]] * (f32((ld_X(i * p.wpr + k / 4u) >> (8u * (k % 4u))) & 0xffu) - zr[i * p.G + gi[k]])',
    unrotate: 'ld_X(i * p.n + k)',
  }[mode];
  const at = mode === 'dequant' || mode === 'unrotate' ? 'i * p.n + perm[k]' : 'i * p.n + k';
  const store = (v: string) => `st_Y(${at}, ${v})`;
  const xType = mode === 'dequant' ? 'u32' : 'f32';
  const io = `${splitVar('X', 1, parts.x, 'read', xType)}
@group(0) @binding(2) var<storage, read> perm: array<u32>;
${splitVar('Y', 3, parts.y, 'read_write')}`;
  if (b === 1) {
    return /* wgsl */ `
${RP}
@group(0) @binding(0) var<uniform> p: P;
${io}
${mode === 'dequant' ? DEQUANT_BINDINGS : ''}
@compute @workgroup_size(${T})
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) l: u32) {
  let i = p.row0 + wg.y;
  let k = wg.x * ${T}u + l;
  if (k >= p.k0) { return; }  // the head: columns [0, k0)
  ${store(load)};
}
`;
  }
  return /* wgsl */ `
${RP}
@group(0) @binding(0) var<uniform> p: P;
${io}
${mode === 'dequant' ? DEQUANT_BINDINGS : ''}
var<workgroup> v: array<f32, ${b}>;
@compute @workgroup_size(${T})
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) l: u32) {
  let i = p.row0 + wg.y;
  let base = p.k0 + wg.x * ${b}u;
  for (var t = l; t < ${b}u; t += ${T}u) { let k = base + t; v[t] = ${load}; }
  workgroupBarrier();
  for (var h = 1u; h < ${b}u; h <<= 1u) {
    for (var t = l; t < ${b / 2}u; t += ${T}u) {
      let a = (t / h) * 2u * h + t % h;
      let x = v[a];
      let y = v[a + h];
      v[a] = x + y;
      v[a + h] = x - y;
    }
    workgroupBarrier();
  }
  let s = bitcast<f32>(p.scaleBits);
  for (var t = l; t < ${b}u; t += ${T}u) { let k = base + t; ${store('v[t] * s')}; }
}
`;
}

/** Y = X − Z (bindings P, X, Z, Y). */
export const SUB_WGSL = /* wgsl */ `
${ELEM_HEAD}
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> X: array<f32>;
@group(0) @binding(2) var<storage, read> Z: array<f32>;
@group(0) @binding(3) var<storage, read_write> Y: array<f32>;
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) g: vec3u) {
  for (var idx = g.x; idx < p.total; idx += p.stride) { Y[idx] = X[idx] - Z[idx]; }
}
`;

/**
 * out[i] = Σ_j A[i, j]·B[i, j] for the m×n A and B (bindings P, A, B, out): one workgroup per row
 * (rows beyond 65535 wrap into workgroup_id.y). B = A gives the rows' squared norms.
 */
export const ROW_DOT_WGSL = /* wgsl */ `
${ELEM_HEAD}
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> A: array<f32>;
@group(0) @binding(2) var<storage, read> B: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
var<workgroup> part: array<f32, 256>;
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) l: u32) {
  let i = wg.x + wg.y * 65535u;
  let live = i < p.m;
  var s = 0.0;
  if (live) { for (var j = l; j < p.n; j += 256u) { s = fma(A[i * p.n + j], B[i * p.n + j], s); } }
  part[l] = s;
  workgroupBarrier();
  for (var w = 128u; w > 0u; w >>= 1u) {
    if (l < w) { part[l] = part[l] + part[l + w]; }
    workgroupBarrier();
  }
  if (live && l == 0u) { out[i] = part[0]; }
}
`;
