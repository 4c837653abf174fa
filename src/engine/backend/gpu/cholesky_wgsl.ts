// WGSL kernels of the Dawn Cholesky (linalg/cholesky_dawn.ts). Row-major n×n float32 buffers.
//
// choleskyDiagWgsl — one workgroup factors the kb×kb diagonal block of A at k0 (kb ≤ BS) in
//   workgroup memory (unblocked, right-looking: a pivot, the column below it, the block's trailing
//   part), writes L11 back, and writes L11⁻¹ (lower, zeros above) into the same block of M.
//   A non-positive pivot is recorded in status[0] (index + 1; first one wins) and status[1] (its bits).
// choleskyPanelWgsl — the panel below: L21 = A21·L11⁻ᵀ, one invocation per row.
// (GEMMs — the trailing update and the inverse's doubling steps — are compute/wgsl_gemm.ts's.)
// reverseWgsl — out[i] = in[N−1−i]: the flip between H⁻¹'s upper factor and the lower factor of J·H·J.
// `parts`: the n×n matrices' binding parts (split.ts) when wider than one binding.

import { splitVar } from './split';

/** Diagonal block width (the panel width of the blocked factorisation). */
export const BS = 64;

export const DIAG_PARAMS = 'struct Params { n: u32, k0: u32, kb: u32, pad: u32 }';

export function choleskyDiagWgsl(parts: readonly number[] = [0]): string {
  return /* wgsl */ `
${DIAG_PARAMS}
@group(0) @binding(0) var<uniform> p: Params;
${splitVar('A', 1, parts, 'read_write')}
${splitVar('M', 2, parts, 'read_write')}
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
    if (i < kb && j <= i) { v = ld_A((k0 + i) * n + k0 + j); }
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
    if (i < kb && j <= i) { st_A((k0 + i) * n + k0 + j, a[idx]); }
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
    for (var i = 0u; i < kb; i++) { st_M((k0 + i) * n + k0 + c, select(0.0, x[i], i >= c)); }
  }
}
`;
}

export function choleskyPanelWgsl(parts: readonly number[] = [0]): string {
  return /* wgsl */ `
${DIAG_PARAMS}
@group(0) @binding(0) var<uniform> p: Params;
${splitVar('A', 1, parts, 'read_write')}
${splitVar('M', 2, parts, 'read')}

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
    if (c < kb && q <= c) { v = ld_M((k0 + c) * n + k0 + q); }
    li[idx] = v;
  }
  workgroupBarrier();
  let r = k0 + kb + wg.x * 64u + t;
  if (r >= n) { return; }
  var row: array<f32, ${BS}>;
  for (var q = 0u; q < kb; q++) { row[q] = ld_A(r * n + k0 + q); }
  for (var c = 0u; c < kb; c++) {
    var s = 0.0;
    for (var q = 0u; q <= c; q++) { s = fma(row[q], li[c * BS + q], s); }
    st_A(r * n + k0 + c, s);
  }
}
`;
}

export function reverseWgsl(parts: readonly number[] = [0]): string {
  return /* wgsl */ `
struct Params { count: u32, stride: u32, pad0: u32, pad1: u32 }
@group(0) @binding(0) var<uniform> p: Params;
${splitVar('src', 1, parts, 'read')}
${splitVar('dst', 2, parts, 'read_write')}

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3u) {
  for (var i = gid.x; i < p.count; i += p.stride) { st_dst(i, ld_src(p.count - 1u - i)); }
}
`;
}
