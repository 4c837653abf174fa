// A tiled WGSL matrix product for the engine's Dawn kernels: C = α·A·op(B) + β·C on strided views of
// flat row-major buffers, batched over workgroup_id.z; 64×64 output tiles, 16×16 invocations with 4×4
// outputs each, K in steps of 16 through workgroup memory. Used by the Dawn Cholesky (trailing update,
// the inverse's doubling steps), the fused GPTQ's lazy update and R1SVD's Ûᵀ·A.

import { splitVar } from './split';

/** Words of the GEMM uniform block (gemmWords writes it from GemmArgs). */
export const GEMM_WORDS = 20;

/**
 * `aInC`/`bInC`: the operand is read from C's buffer (binding 3) — WebGPU forbids binding one buffer
 * read-only and writable in the same dispatch, and the trailing update (A22 −= L21·L21ᵀ) and the
 * second doubling product (M21 = −M22·T) read blocks of the matrix they write (disjoint blocks).
 */
/**
 * The kernel's WGSL (entry point `main`; bindings 0 uniforms, 1 A, 2 B, 3 C — 1/2 absent when read from C).
 * `parts`: element offsets of an operand bound in row parts (split.ts; default whole).
 */
export function gemmWgsl(
  transB: boolean,
  lowerOnly: boolean,
  aInC: boolean,
  bInC: boolean,
  parts: { a?: readonly number[]; b?: readonly number[]; c?: readonly number[] } = {},
): string {
  return /* wgsl */ `
struct Params {
  M: u32, N: u32, K: u32, lda: u32,
  ldb: u32, ldc: u32, offA: u32, offB: u32,
  offC: u32, zA: u32, zB: u32, zC: u32,
  limBase: u32, limStride: u32, raggedK: u32, pad0: u32,
  alpha: f32, beta: f32, pad1: u32, pad2: u32,
}
@group(0) @binding(0) var<uniform> p: Params;
${aInC ? '' : splitVar('A', 1, parts.a ?? [0], 'read')}
${bInC ? '' : splitVar('B', 2, parts.b ?? [0], 'read')}
${splitVar('C', 3, parts.c ?? [0], 'read_write')}
fn ldA(i: u32) -> f32 { return ld_${aInC ? 'C' : 'A'}(i); }
fn ldB(i: u32) -> f32 { return ld_${bInC ? 'C' : 'B'}(i); }

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
        if (p.beta != 0.0) { v = v + p.beta * ld_C(o); }
        st_C(o, v);
      }
    }
  }
}
`;
}

/** Sizes, leading dimensions and element offsets (z: per batch entry), as the kernel's Params. */
export interface GemmArgs {
  M: number;
  N: number;
  K: number;
  lda: number;
  ldb: number;
  ldc: number;
  offA: number;
  offB: number;
  offC: number;
  zA?: number;
  zB?: number;
  zC?: number;
  /** Rows of batch entry z: min(M, limBase − z·limStride) (default: M). */
  limBase?: number;
  limStride?: number;
  raggedK?: boolean;
  alpha: number;
  beta: number;
}

/** The uniform block for one GEMM dispatch. */
export function gemmWords(a: GemmArgs): Uint32Array {
  const w = new Uint32Array(GEMM_WORDS);
  const f = new Float32Array(w.buffer);
  w.set([a.M, a.N, a.K, a.lda, a.ldb, a.ldc, a.offA, a.offB, a.offC, a.zA ?? 0, a.zB ?? 0, a.zC ?? 0, a.limBase ?? a.M, a.limStride ?? 0, a.raggedK ? 1 : 0, 0]);
  f[16] = a.alpha;
  f[17] = a.beta;
  return w;
}

/** Workgroup counts for a GEMM of M×N outputs and `batch` entries. */
export const gemmGroups = (M: number, N: number, batch = 1): [number, number, number] => [Math.ceil(N / 64), Math.ceil(M / 64), batch];
