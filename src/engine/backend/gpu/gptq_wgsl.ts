// The batch kernel of the fused GPTQ loop (gptq_loop.ts). Names follow `fasterquant`.
//
// gptqBatchWgsl — one invocation per row of W runs the reference's inner loop over the batch's
// columns i1..i2 on its own row (rows are independent given Hinv and the params):
//   q = clamp(round(w_i / s) + z, 0, maxq);  err = (w_i − s·(q − z)) / Hinv[k, k]
//   w_j −= err·Hinv[k, j] for the batch's later columns j;  Losses += err²/2
// with the row's batch slice in registers/local memory (B ≤ 256) or, for wider batches, in a storage
// scratch buffer (B × rows, column-major so that neighbouring rows' invocations touch neighbouring
// words), Err1 written for the lazy update, and the codes packed four per u32 (quantization order).
// Dynamic group params come from the global W at the group's first column (the reference's find_params
// on W, which lags the intra-batch updates — which is why the batch never writes W, even in the scratch
// variant), fitted by quantize_wgsl.ts's findParamsWgsl: min-max or the mse search.
// The lazy update W[:, i2:] −= Err1·Hinv[i1:i2, i2:] is compute/wgsl_gemm.ts's GEMM.

import { DIV_RN_WGSL, f32Lit, findParamsWgsl, type Clip } from './quantize_wgsl';

/** Per-dispatch parameters (one uniform buffer per batch). */
export const PARAMS_WORDS = 8;
// uOff: where Hinv's row i1 starts in the binding U (the loop binds only the batch's rows of Hinv).
const PARAMS = 'struct Params { rows: u32, cols: u32, i1: u32, count: u32, i2: u32, wordsPerRow: u32, ng: u32, uOff: u32 }';

export interface BatchKernelShape {
  /** Lazy batch width (the private row slice's length). */
  B: number;
  maxq: number;
  sym: boolean;
  /** Dynamic group params (find_params at each group start); false: params given (per row or static groups). */
  dynamic: boolean;
  /** Group width (dynamic groups only). */
  G: number;
  /** Dynamic groups' range fit (default 'minmax'). */
  clip?: Clip;
  /**
   * The row slice in a storage scratch buffer (binding 8, B × rows floats) instead of a private array:
   * for B > 256, where a private array of B floats per invocation is too large.
   */
  scratch?: boolean;
}

export function gptqBatchWgsl(k: BatchKernelShape): string {
  // The row slice w[0..count): private, or column i of the scratch buffer at this row.
  const w = (i: string) => (k.scratch ? `S[(${i}) * p.rows + r]` : `w[${i}]`);
  return /* wgsl */ `
${PARAMS}
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> W: array<f32>;            // rows×cols, quantization order
@group(0) @binding(2) var<storage, read> U: array<f32>;            // rows i1…i2 of the cols×cols Hinv (upper), from uOff
@group(0) @binding(3) var<storage, read_write> E: array<f32>;      // rows×B: Err1 of this batch
@group(0) @binding(4) var<storage, read_write> codes: array<u32>;  // rows×wordsPerRow, 4 codes per word
@group(0) @binding(5) var<storage, read_write> params: array<f32>; // rows×ng×(scale, zero)
@group(0) @binding(6) var<storage, read_write> loss: array<f32>;   // rows: Σ err²/2
@group(0) @binding(7) var<storage, read> slot: array<u32>;         // cols: group slot of column k
${k.scratch ? "@group(0) @binding(8) var<storage, read_write> S: array<f32>;      // B×rows: the batch's row slices, column-major" : ''}

const B: u32 = ${k.B}u;
const MAXQ: f32 = ${f32Lit(k.maxq)};
const G: u32 = ${Math.max(1, k.G)}u;
${DIV_RN_WGSL}
${k.dynamic ? findParamsWgsl({ maxq: k.maxq, sym: k.sym, clip: k.clip ?? 'minmax', src: 'W' }) : ''}
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let r = gid.x;
  if (r >= p.rows) { return; }
  let row = r * p.cols;
  ${k.scratch ? '' : 'var w: array<f32, B>;'}
  for (var i = 0u; i < p.count; i++) { ${w('i')} = W[row + p.i1 + i]; }
  var l = 0.0;
  // A batch starting inside a word (B not a multiple of 4) continues the word the last batch began.
  var word = 0u;
  if ((p.i1 & 3u) != 0u) { word = codes[r * p.wordsPerRow + (p.i1 >> 2u)]; }
  for (var i = 0u; i < p.count; i++) {
    let k = p.i1 + i;
    let po = (r * p.ng + slot[k]) * 2u;
    ${
      k.dynamic
        ? `if (k % G == 0u) {
      let sz = find_params(row + k, min(G, p.cols - k));
      params[po] = sz.x;
      params[po + 1u] = sz.y;
    }`
        : ''
    }
    let s = params[po];
    let z = params[po + 1u];
    let x = ${w('i')};
    let q = clamp(round(div_rn(x, s)) + z, 0.0, MAXQ);
    let hk = p.uOff + i * p.cols; // Hinv[k, :] (k = i1 + i)
    let err = (x - s * (q - z)) / U[hk + k];
    l += err * err;
    E[r * B + i] = err;
    word |= u32(q) << (8u * (k & 3u));
    if ((k & 3u) == 3u || i + 1u == p.count) {
      codes[r * p.wordsPerRow + (k >> 2u)] = word;
      word = 0u;
    }
    let hb = hk + p.i1; // Hinv[k, i1 + j] at hb + j
    for (var j = i + 1u; j < p.count; j++) { ${w('j')} -= err * U[hb + j]; }
  }
  loss[r] += 0.5 * l;
}
`;
}
