// WGSL kernels of the Dawn Cholesky (linalg/cholesky_dawn.ts). Row-major n×n float32 buffers.
//
// choleskyDiagWgsl — one workgroup factors the kb×kb diagonal block of A at k0 (kb ≤ BS) in
//   workgroup memory (unblocked, right-looking: a pivot, the column below it, the block's trailing
//   part), writes L11 back, and writes L11⁻¹ (lower, zeros above) into the same block of M.
//   A non-positive pivot is recorded in status[0] (index + 1; first one wins) and status[1] (its bits).
// choleskyPanelWgsl — the panel below: L21 = A21·L11⁻ᵀ, one invocation per row.
// gemmWgsl — C = α·A·op(B) + β·C on strided views, batched over z (workgroup_id.z), 64×64 tiles:
//   the Cholesky's trailing update (A22 −= L21·L21ᵀ, lower tiles only) and the triangular inverse's
//   doubling steps (M21 = −M22·L21·M11 for every pair of blocks of one level at once).
// reverseWgsl — out[i] = in[N−1−i]: the flip between H⁻¹'s upper factor and the lower factor of J·H·J.

/** Diagonal block width (the panel width of the blocked factorisation). */
export const BS = 64;

export const DIAG_PARAMS = 'struct Params { n: u32, k0: u32, kb: u32, pad: u32 }';

export function choleskyDiagWgsl(): string {
  return /* wgsl */ `
${DIAG_PARAMS}
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> A: array<f32>;
@group(0) @binding(2) var<storage, read_write> M: array<f32>;
@group(0) @binding(3) var<storage, read_write> status: array<atomic<u32>>;

const BS: u32 = ${BS}u;
var<workgroup> a: array<f32, ${BS * BS}>;

@compute @workgroup_size(256)
fn main(@builtin(local_invocation_index) t: u32) {
  let n = p.n;
  let k0 = p.k0;
  let kb = p.kb;
  for (var idx = t; idx < BS * BS; idx += 256u) {
    let i = idx / BS;
    let j = idx % BS;
    var v = 0.0;
    if (i < kb && j <= i) { v = A[(k0 + i) * n + k0 + j]; }
    a[idx] = v;
  }
  workgroupBarrier();
  for (var j = 0u; j < kb; j++) {
    if (t == 0u) {
      var d = a[j * BS + j];
      if (!(d > 0.0) || d > 3.0e38) {
        if (atomicLoad(&status[0]) == 0u) {
          atomicStore(&status[0], k0 + j + 1u);
          atomicStore(&status[1], bitcast<u32>(d));
        }
        d = 1.0; // keep the rest finite; the caller discards the result
      }
      a[j * BS + j] = sqrt(d);
    }
    workgroupBarrier();
    let djj = a[j * BS + j];
    for (var i = j + 1u + t; i < kb; i += 256u) { a[i * BS + j] = a[i * BS + j] / djj; }
    workgroupBarrier();
    let m = kb - j - 1u;
    for (var idx = t; idx < m * m; idx += 256u) {
      let i = j + 1u + idx / m;
      let l = j + 1u + idx % m;
      if (l <= i) { a[i * BS + l] = a[i * BS + l] - a[i * BS + j] * a[l * BS + j]; }
    }
    workgroupBarrier();
  }
  for (var idx = t; idx < BS * BS; idx += 256u) {
    let i = idx / BS;
    let j = idx % BS;
    if (i < kb && j <= i) { A[(k0 + i) * n + k0 + j] = a[idx]; }
  }
  // L11⁻¹ by columns: invocation c solves L11·x = e_c (forward substitution; x_i = 0 for i < c).
  if (t < kb) {
    let c = t;
    var x: array<f32, ${BS}>;
    for (var i = c; i < kb; i++) {
      var s = select(0.0, 1.0, i == c);
      for (var q = c; q < i; q++) { s = s - a[i * BS + q] * x[q]; }
      x[i] = s / a[i * BS + i];
    }
    for (var i = 0u; i < kb; i++) { M[(k0 + i) * n + k0 + c] = select(0.0, x[i], i >= c); }
  }
}
`;
}

export function choleskyPanelWgsl(): string {
  return /* wgsl */ `
${DIAG_PARAMS}
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> A: array<f32>;
@group(0) @binding(2) var<storage, read> M: array<f32>;

const BS: u32 = ${BS}u;
var<workgroup> li: array<f32, ${BS * BS}>; // L11⁻¹

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) t: u32) {
  let n = p.n;
  let k0 = p.k0;
  let kb = p.kb;
  for (var idx = t; idx < BS * BS; idx += 64u) {
    let c = idx / BS;
    let q = idx % BS;
    var v = 0.0;
    if (c < kb && q <= c) { v = M[(k0 + c) * n + k0 + q]; }
    li[idx] = v;
  }
  workgroupBarrier();
  let r = k0 + kb + wg.x * 64u + t;
  if (r >= n) { return; }
  var row: array<f32, ${BS}>;
  for (var q = 0u; q < kb; q++) { row[q] = A[r * n + k0 + q]; }
  for (var c = 0u; c < kb; c++) {
    var s = 0.0;
    for (var q = 0u; q <= c; q++) { s = fma(row[q], li[c * BS + q], s); }
    A[r * n + k0 + c] = s;
  }
}
`;
}

/** Words of the GEMM uniform block (see GemmArgs in cholesky_dawn.ts). */
export const GEMM_WORDS = 20;

/**
 * `aInC`/`bInC`: the operand is read from C's buffer (binding 3) — WebGPU forbids binding one buffer
 * read-only and writable in the same dispatch, and the trailing update (A22 −= L21·L21ᵀ) and the
 * second doubling product (M21 = −M22·T) read blocks of the matrix they write (disjoint blocks).
 */
export function gemmWgsl(transB: boolean, lowerOnly: boolean, aInC: boolean, bInC: boolean): string {
  return /* wgsl */ `
struct Params {
  M: u32, N: u32, K: u32, lda: u32,
  ldb: u32, ldc: u32, offA: u32, offB: u32,
  offC: u32, zA: u32, zB: u32, zC: u32,
  limBase: u32, limStride: u32, raggedK: u32, pad0: u32,
  alpha: f32, beta: f32, pad1: u32, pad2: u32,
}
@group(0) @binding(0) var<uniform> p: Params;
${aInC ? '' : '@group(0) @binding(1) var<storage, read> A: array<f32>;'}
${bInC ? '' : '@group(0) @binding(2) var<storage, read> B: array<f32>;'}
@group(0) @binding(3) var<storage, read_write> C: array<f32>;
fn ldA(i: u32) -> f32 { return ${aInC ? 'C' : 'A'}[i]; }
fn ldB(i: u32) -> f32 { return ${bInC ? 'C' : 'B'}[i]; }

const T: u32 = 64u;
const KS: u32 = 16u;
var<workgroup> As: array<array<f32, 16>, 64>;
var<workgroup> Bs: array<array<f32, 64>, 16>;

@compute @workgroup_size(16, 16)
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_id) lid: vec3u) {
  let z = wg.z;
  // Rows of this batch entry (the last pair of a doubling level may be short), and K with them.
  var mz = p.M;
  let used = z * p.limStride;
  if (used >= p.limBase) { mz = 0u; } else { mz = min(p.M, p.limBase - used); }
  var kz = p.K;
  if (p.raggedK != 0u) { kz = min(p.K, mz); }
  let r0 = wg.y * T;
  let c0 = wg.x * T;
  if (r0 >= mz) { return; }
  if (${lowerOnly} && c0 > r0 + T - 1u) { return; }
  let a0 = p.offA + z * p.zA;
  let b0 = p.offB + z * p.zB;
  let tid = lid.y * 16u + lid.x;
  var acc: array<vec4f, 4>;
  for (var k0 = 0u; k0 < kz; k0 += KS) {
    for (var t = 0u; t < 4u; t++) {
      let idx = tid + t * 256u;
      let rr = idx / KS;
      let kk = idx % KS;
      var av = 0.0;
      if (r0 + rr < mz && k0 + kk < kz) { av = ldA(a0 + (r0 + rr) * p.lda + k0 + kk); }
      As[rr][kk] = av;
      var kb: u32;
      var cc: u32;
      if (${transB}) { kb = idx % KS; cc = idx / KS; } else { kb = idx / T; cc = idx % T; }
      var bv = 0.0;
      if (k0 + kb < kz && c0 + cc < p.N) {
        if (${transB}) { bv = ldB(b0 + (c0 + cc) * p.ldb + k0 + kb); } else { bv = ldB(b0 + (k0 + kb) * p.ldb + c0 + cc); }
      }
      Bs[kb][cc] = bv;
    }
    workgroupBarrier();
    for (var kk = 0u; kk < KS; kk++) {
      let b = vec4f(Bs[kk][lid.x * 4u], Bs[kk][lid.x * 4u + 1u], Bs[kk][lid.x * 4u + 2u], Bs[kk][lid.x * 4u + 3u]);
      for (var i = 0u; i < 4u; i++) { acc[i] = fma(vec4f(As[lid.y * 4u + i][kk]), b, acc[i]); }
    }
    workgroupBarrier();
  }
  let cb = p.offC + z * p.zC;
  for (var i = 0u; i < 4u; i++) {
    let gr = r0 + lid.y * 4u + i;
    if (gr >= mz) { continue; }
    for (var j = 0u; j < 4u; j++) {
      let gc = c0 + lid.x * 4u + j;
      if (gc < p.N) {
        let o = cb + gr * p.ldc + gc;
        var v = p.alpha * acc[i][j];
        if (p.beta != 0.0) { v = v + p.beta * C[o]; }
        C[o] = v;
      }
    }
  }
}
`;
}

export function reverseWgsl(): string {
  return /* wgsl */ `
struct Params { count: u32, stride: u32, pad0: u32, pad1: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3u) {
  for (var i = gid.x; i < p.count; i += p.stride) { dst[i] = src[p.count - 1u - i]; }
}
`;
}
