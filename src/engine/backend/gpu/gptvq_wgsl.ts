// GPTVQ's codeword search with its in-batch error feedback (quant/gptvq.ts VqStep.run) as one WGSL kernel:
// rows are independent given U and the codebook, so one invocation per row walks the d-column steps
// j = s0, s0 + d, … < s1 of the lazy batch [i1, i2) in order:
//   Minv = (U[j:j+d, j:j+d])⁻¹ (upper, back substitution as VqStep's upperInverse);
//   c = the first codeword minimising ‖(w − c)·Minv‖²;  E = (w − c)·Minv;  Σ ½‖E‖² per row;
//   W[r, j+d : i2] −= E·U[j:j+d, j+d:i2].
// The row's part of the batch, W[r, s0:i2], is a private array (B ≤ 256) or, for wider batches, read and
// written in W itself. A segment [s0, s1) ends where a codebook group starts inside the batch: the k-means
// of that group reads W's columns with the segment's feedback applied, so the segment writes W[r, s1:i2] back.
// E (rows × B, from column i1) is what the lazy update W[:, i2:] −= E·U[i1:i2, i2:] (wgsl_gemm.ts) reads.

/** Widest lazy batch kept in a private array per invocation. */
export const VQ_MAX_PRIVATE = 256;

/** Per-dispatch parameters (vqWords). */
const PARAMS = 'struct Params { rows: u32, cols: u32, i1: u32, i2: u32, s0: u32, s1: u32, uOff: u32, wpr: u32 }';

export interface VqKernelShape {
  /** Vector dimension, codebook entries, codebook group width (columns), lazy batch width. */
  D: number;
  K: number;
  g: number;
  B: number;
}

export function vqStepWgsl(s: VqKernelShape): string {
  const priv = s.B <= VQ_MAX_PRIVATE;
  // Column c (global, s0 ≤ c < i2) of this row's batch part.
  const w = (c: string) => (priv ? `w[(${c}) - p.s0]` : `W[row + (${c})]`);
  return /* wgsl */ `
${PARAMS}
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> W: array<f32>;     // rows×cols
@group(0) @binding(2) var<storage, read> U: array<f32>;           // rows i1…i2 of the cols×cols U (upper), from uOff
@group(0) @binding(3) var<storage, read_write> E: array<f32>;     // rows×B: E of this batch
@group(0) @binding(4) var<storage, read_write> codes: array<u32>; // rows×wpr: two 16-bit codes per word
@group(0) @binding(5) var<storage, read_write> loss: array<f32>;  // rows: Σ ½‖E‖²
@group(0) @binding(6) var<storage, read> cb: array<f32>;          // groups×K×D: the FP16-rounded codebooks

const D: u32 = ${s.D}u;
const K: u32 = ${s.K}u;
const GW: u32 = ${s.g}u;
const B: u32 = ${s.B}u;
const BIG: f32 = 0x1.fffffep+127f;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let r = gid.x;
  if (r >= p.rows) { return; }
  let row = r * p.cols;
  ${priv ? 'var w: array<f32, B>;\n  for (var c = p.s0; c < p.i2; c++) { w[c - p.s0] = W[row + c]; }' : ''}
  var l = 0.0;
  for (var j = p.s0; j < p.s1; j += D) {
    // U[j + a, j + b] at ub + a·cols + b.
    let ub = p.uOff + (j - p.i1) * p.cols + j;
    var mi: array<f32, ${s.D * s.D}>;
    for (var c = 0u; c < D; c++) {
      for (var ii = i32(c); ii >= 0; ii--) {
        let i = u32(ii);
        var t = select(0.0, 1.0, i == c);
        for (var k = i + 1u; k <= c; k++) { t -= U[ub + i * p.cols + k] * mi[k * D + c]; }
        mi[i * D + c] = t / U[ub + i * p.cols + i];
      }
    }
    var x: array<f32, D>;
    for (var t = 0u; t < D; t++) { x[t] = ${w('j + t')}; }
    let cbo = (j / GW) * K * D;
    var best = 0u;
    var bestV = BIG;
    for (var c = 0u; c < K; c++) {
      var v = 0.0;
      for (var b = 0u; b < D; b++) {
        var eb = 0.0;
        for (var a = 0u; a <= b; a++) { eb += (x[a] - cb[cbo + c * D + a]) * mi[a * D + b]; }
        v += eb * eb;
        if (v >= bestV) { break; }
      }
      if (v < bestV) { bestV = v; best = c; }
    }
    let vi = j / D;
    let wi = r * p.wpr + (vi >> 1u);
    let sh = (vi & 1u) * 16u;
    codes[wi] = (codes[wi] & ~(0xffffu << sh)) | (best << sh);
    var e: array<f32, D>;
    for (var b = 0u; b < D; b++) {
      var eb = 0.0;
      for (var a = 0u; a <= b; a++) { eb += (x[a] - cb[cbo + best * D + a]) * mi[a * D + b]; }
      e[b] = eb;
      E[r * B + j - p.i1 + b] = eb;
      l += eb * eb / 2.0;
    }
    for (var a = 0u; a < D; a++) {
      let ea = e[a];
      if (ea == 0.0) { continue; }
      let h = p.uOff + (j + a - p.i1) * p.cols;
      for (var c = j + D; c < p.i2; c++) { ${w('c')} -= ea * U[h + c]; }
    }
  }
  ${priv ? 'for (var c = p.s1; c < p.i2; c++) { W[row + c] = w[c - p.s0]; }' : ''}
  loss[r] += l;
}
`;
}

/** The uniform words of one segment [s0, s1) of the batch [i1, i2); uOff: where U's row i1 starts in its binding. */
export function vqWords(a: { rows: number; cols: number; i1: number; i2: number; s0: number; s1: number; uOff: number; wpr: number }): number[] {
  return [a.rows, a.cols, a.i1, a.i2, a.s0, a.s1, a.uOff, a.wpr];
}
