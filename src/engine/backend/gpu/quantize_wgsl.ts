// The reference quantizer (quant/quantizer.ts) in WGSL, for the Dawn kernels (dawn.ts):
//   findParamsWgsl — a WGSL function computing (scale, zero) of one row segment as findParamsRow
//                    (clip 'minmax', bit-exact) or findParamsRowMse (clip 'mse', see "Precision" below),
//                    shared by the kernels here and the fused GPTQ batch kernel (gptq_wgsl.ts);
//   groupParams    — the params of every (row, group of g columns) of a rows×cols float32 W;
//   rtnCodes       — round-to-nearest codes with given params, packed 4 per u32 word (the layout of
//                    gptq_loop.ts), optionally with the dequantized values scale·(code − zero).
// Float32 semantics as the reference: + − × are correctly rounded in WGSL; '/' is not (Vulkan allows
// 2.5 ulp), so every division that decides a code or a param goes through div_rn, and a product that a
// compiler could fuse into the following addition through mul_rn (DIV_RN_WGSL); WGSL `round` is
// round-half-to-even like torch.round.
//
// Precision of clip 'mse' against findParamsRowMse. Both search the same 80 candidates with the same
// float32 (scale, zero) per candidate (the shrink factors p = fround(1 − i/100) are computed in JS and
// embedded as float32 constants) and the same codes; only the error Σ|ŵ − x|^2.4 that ranks them is
// rounded differently: the reference sums in float64 with its power read from an interpolated table
// (~1e-7 relative), the kernel in float32 with WGSL pow. Where two candidates' errors are within ~1e-7
// of each other either may win. Measured on SwiftShader, 16 × 4096 rows of 128 values (normal and
// Student-t ν = 3 weights, W2/W3/W4/W8, asym and sym — 65 536 fits): 6 params differ from
// findParamsRowMse (0.009 %), each by one shrink step (scale rel. diff ≤ 2.3e-2). Against an exact float64
// search (no table) only 2 differ (the two best errors 1.6e-7 and 2.6e-8 apart); the other 4 are exact
// ties that the kernel, like quant.py, resolves to the earlier (wider) candidate and the reference's table
// does not. Kahan-summing the errors changed none of them (the rounding of each term dominates). With
// device pow noise emulated (log2 off by up to ±2.4e-7, as a GPU's fast log2) 6 still differed with
// |ŵ − x|² · |ŵ − x|^0.4 and 7 with a plain pow(|ŵ − x|, 2.4) — the split keeps the exponent, hence the
// pow's error, small. A fit that differs moves few codes, if any (the unit test's 3 differing fits of
// 54 832 give the reference's codes exactly).

import type { DawnGpu } from './dawn';
import { strideGroups } from './layer_wgsl';

/**
 * x / y rounded to nearest, as the reference's float32 division. WGSL's '/' may be off by ~2.5 ulp
 * (Vulkan's precision), which moves x/s off an exact tie (x/s = k + ½, or −(maxq+1)/2 for a sym group's
 * extreme weight) and changes a code; one correction step with the exact remainder r = x − y·q0 fixes it
 * (q0 + r/y is within ~2⁻²¹ ulp of x/y before its final rounding: only a quotient that close to a
 * midpoint could still round the wrong way, and a division by maxq never is).
 *
 * The remainder without fma: WGSL's fma need not be fused (SwiftShader's is not: the former
 * `q0 + fma(−q0, y, x) / y` got 11 % of random quotients wrong there, where plain '/' was exact), and a
 * compiler may fuse a·b − c on its own. So y is cut into three 8-bit pieces and q into two 12-bit ones
 * (bit masks on the significand): all six partial products are exact in float32, and subtracted from x
 * largest first every partial remainder fits in 24 bits — each step is exact whether or not it is fused.
 * The last step is exact once q0 is within an ulp, and has the right sign and ~24-bit accuracy always.
 * Valid while the pieces' products stay normal numbers (|weights| ≳ 1e-25).
 *
 * Also mul_rn(a, b, ones): the rounded product fround(a·b) where it feeds an addition (the mse search's
 * hi − lo and ŵ − x): a compiler may contract a·b − c into one fma (WGSL does not forbid it and cannot
 * mark an operation `precise`), which skips the product's rounding that the reference does. The
 * product's bits pass through an AND with `ones` — all ones, but a runtime value the compiler cannot
 * fold — so it stays a separately rounded value. One integer op.
 * Include once per WGSL module that uses findParamsWgsl or the kernels' code paths.
 */
export const DIV_RN_WGSL = /* wgsl */ `
// v with its significand cut to its top bits (mask; sign and exponent kept): v − cut is exact.
fn cut_bits(v: f32, mask: u32) -> f32 { return bitcast<f32>(bitcast<u32>(v) & mask); }

// x − y·q exactly for q within an ulp of x/y (see DIV_RN_WGSL in quant/quantize_wgsl.ts).
fn rem_exact(x: f32, y: f32, q: f32) -> f32 {
  let y1 = cut_bits(y, 0xffff0000u);  // significant bits 1–8 of y
  let y12 = cut_bits(y, 0xffffff00u); // bits 1–16
  let y2 = y12 - y1;                  // bits 9–16
  let y3 = y - y12;                   // bits 17–24
  let qh = cut_bits(q, 0xfffff000u);  // bits 1–12 of q
  let ql = q - qh;                    // bits 13–24
  return (((((x - y1 * qh) - y2 * qh) - y1 * ql) - y3 * qh) - y2 * ql) - y3 * ql;
}

fn mul_rn(a: f32, b: f32, ones: u32) -> f32 { return bitcast<f32>(bitcast<u32>(a * b) & ones); }

fn div_rn(x: f32, y: f32) -> f32 {
  let q0 = x / y;
  let r = rem_exact(x, y, q0);
  return select(q0 + r / y, q0, r == 0.0); // q0 as is when exact: keeps −0 (torch's zero point of a group ≥ 0)
}
`;

export type Clip = 'minmax' | 'mse';

export interface FindParamsShape {
  /** 2^bits − 1. */
  maxq: number;
  sym: boolean;
  clip: Clip;
  /** Name of the module's storage array (array<f32>) the segment is read from. */
  src: string;
  /** WGSL name of the function (default find_params); module-scope helpers get it as a prefix. */
  name?: string;
  /** The reference's mse search (quant.py defaults). */
  grid?: number;
  maxShrink?: number;
  norm?: number;
}

/** A float32 value as a WGSL literal that parses back to exactly that value (JS prints the shortest exact decimal of the double). */
export function f32Lit(v: number): string {
  const f = Math.fround(v);
  if (!Number.isFinite(f)) throw new RangeError(`not a finite float32: ${v}`);
  const s = String(f);
  return /[.e]/.test(s) ? `${s}f` : `${s}.0f`;
}

/** The shrink factors p_i = fround(1 − i/grid), i < trunc(maxShrink·grid), exactly as findParamsRowMse computes them. */
export function shrinkFactors(grid = 100, maxShrink = 0.8): Float32Array {
  return Float32Array.from({ length: Math.trunc(maxShrink * grid) }, (_, i) => Math.fround(1 - i / grid));
}

/**
 * WGSL text defining `fn <name>(base: u32, len: u32) -> vec2f`: (scale, zero) of the segment
 * src[base], …, src[base + len − 1], as quantizer.ts findParamsRow (clip 'minmax') or findParamsRowMse
 * (clip 'mse'). The module must also contain DIV_RN_WGSL. len ≥ 1.
 */
export function findParamsWgsl(k: FindParamsShape): string {
  const fn = k.name ?? 'find_params';
  const W = k.src;
  const maxq = f32Lit(k.maxq),
    half = f32Lit((k.maxq + 1) / 2);
  // The min-max params: xmin = min(min x, 0), xmax = max(max x, 0); sym: symmetrised (xmin stays 0 for
  // a segment without negatives, quant.py's `xmin[tmp] = -xmax[tmp]` with tmp = xmin < 0); an all-zero
  // segment gets [−1, 1]. min/max of float32 values are exact.
  const minmax = /* wgsl */ `
  var xmin = 0.0;
  var xmax = 0.0;
  for (var j = 0u; j < len; j++) {
    let v = ${W}[base + j];
    xmin = min(xmin, v);
    xmax = max(xmax, v);
  }
  ${k.sym ? 'xmax = max(-xmin, xmax);\n  if (xmin < 0.0) { xmin = -xmax; }' : ''}
  if (xmin == 0.0 && xmax == 0.0) { xmin = -1.0; xmax = 1.0; }
  var s = div_rn(xmax - xmin, ${maxq});
  var z = ${k.sym ? half : 'round(div_rn(-xmin, s))'};`;
  if (k.clip === 'minmax') {
    return /* wgsl */ `
fn ${fn}(base: u32, len: u32) -> vec2f {${minmax}
  return vec2f(s, z);
}
`;
  }
  const p = shrinkFactors(k.grid, k.maxShrink);
  const norm = k.norm ?? 2.4;
  // d^norm as d²·d^(norm−2) (norm ≥ 2): a device pow is exp2(y·log2 d), whose error grows with y.
  const term = norm >= 2 ? `d * d * pow(d, ${f32Lit(norm - 2)})` : `pow(d, ${f32Lit(norm)})`;
  return /* wgsl */ `
const ${fn}_shrink = array<f32, ${p.length}>(${Array.from(p, f32Lit).join(', ')});

fn ${fn}(base: u32, len: u32) -> vec2f {${minmax}
  // quant.py's mse search: shrink the range by p_i, keep the (scale, zero) with the smallest
  // Σ|s·(q − z) − x|^norm (strictly smaller wins: ties keep the wider range; i = 0 is the min-max fit).
  // |ŵ − x| is measured in units of the min-max scale — a factor common to all candidates, so the
  // same argmin, and no float32 overflow or underflow of the power for huge or tiny weights.
  // The early exit (an error already ≥ the best cannot win) is the reference's too.
  // ones: all bits set (len ≥ 1) — mul_rn's mask, a value the compiler cannot fold.
  let ones = select(0xffffffffu, 0u, len == 0u);
  let inv0 = 1.0 / s;
  var best = 0.0;
  for (var i = 0u; i < ${p.length}u; i++) {
    let sh = ${fn}_shrink[i];
    let lo = mul_rn(sh, xmin, ones);
    let hi = mul_rn(sh, xmax, ones);
    let s1 = div_rn(hi - lo, ${maxq});
    let z1 = ${k.sym ? half : 'round(div_rn(-lo, s1))'};
    var err = 0.0;
    for (var j = 0u; j < len; j++) {
      let x = ${W}[base + j];
      let q = clamp(round(div_rn(x, s1)) + z1, 0.0, ${maxq});
      let d = abs(mul_rn(s1, q - z1, ones) - x) * inv0;
      if (d > 0.0) { err += ${term}; }
      if (i > 0u && err >= best) { break; }
    }
    if (i == 0u || err < best) {
      best = err;
      s = s1;
      z = z1;
    }
  }
  return vec2f(s, z);
}
`;
}

// ── kernels ──────────────────────────────────────────────────────────────────────────────────────

/** u32 words of the kernels' uniform block. */
export const QUANT_P_WORDS = 8;
const QP = 'struct P { rows: u32, cols: u32, g: u32, G: u32, total: u32, stride: u32, wpr: u32, pad: u32 }';

export interface QuantKernelShape {
  maxq: number;
  sym: boolean;
  clip: Clip;
}

/**
 * groupParams: P[(r·G + gi)·2 + {0, 1}] = (scale, zero) of row r, columns [gi·g, min(gi·g + g, cols)).
 * One invocation per (row, group), grid-strided (bindings: P uniforms, W, params).
 */
export function groupParamsWgsl(k: QuantKernelShape): string {
  return /* wgsl */ `
${QP}
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> W: array<f32>;           // rows×cols
@group(0) @binding(2) var<storage, read_write> params: array<f32>; // rows×G×(scale, zero)
${DIV_RN_WGSL}
${findParamsWgsl({ ...k, src: 'W' })}
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3u) {
  // idx = r·G + gi: neighbouring invocations read neighbouring groups of a row (and write neighbouring params).
  for (var idx = gid.x; idx < p.total; idx += p.stride) {
    let r = idx / p.G;
    let c0 = (idx % p.G) * p.g;
    let sz = find_params(r * p.cols + c0, min(p.g, p.cols - c0));
    params[2u * idx] = sz.x;
    params[2u * idx + 1u] = sz.y;
  }
}
`;
}

/**
 * rtnCodes: code = clamp(round(x / s) + z, 0, maxq) of every W[r, c] with the params of (r, ⌊c/g⌋),
 * packed 4 per u32 (word r·wpr + c/4, byte c % 4, little endian; wpr = ⌈cols/4⌉), and with `dequant`
 * Q[r, c] = s·(code − z). One invocation per word, grid-strided: neighbouring invocations read
 * neighbouring 16-byte runs of W (bindings: P uniforms, W, params, codes[, Q]).
 */
export function rtnCodesWgsl(k: { maxq: number; dequant: boolean }): string {
  return /* wgsl */ `
${QP}
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> W: array<f32>;          // rows×cols
@group(0) @binding(2) var<storage, read> params: array<f32>;     // rows×G×(scale, zero)
@group(0) @binding(3) var<storage, read_write> codes: array<u32>; // rows×wpr
${k.dequant ? '@group(0) @binding(4) var<storage, read_write> Q: array<f32>;      // rows×cols' : ''}
${DIV_RN_WGSL}
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3u) {
  for (var idx = gid.x; idx < p.total; idx += p.stride) {
    let r = idx / p.wpr;
    let c0 = (idx % p.wpr) * 4u;
    var word = 0u;
    for (var a = 0u; a < 4u && c0 + a < p.cols; a++) {
      let c = c0 + a;
      let po = 2u * (r * p.G + c / p.g);
      let s = params[po];
      let z = params[po + 1u];
      let i = r * p.cols + c;
      let q = clamp(round(div_rn(W[i], s)) + z, 0.0, ${f32Lit(k.maxq)});
      word |= u32(q) << (8u * a);
      ${k.dequant ? 'Q[i] = s * (f32(u32(q)) - z); // the stored code (+0, never −0) − zero, as dequantizeCode' : ''}
    }
    codes[idx] = word;
  }
}
`;
}

/** Rows, columns and group width (−1: one group per row) of a quantized matrix. */
export interface QuantLayout {
  rows: number;
  cols: number;
  groupSize: number;
}

/** Group width g (groupSize −1 → cols), groups per row G and code words per row wpr. */
export function quantGeometry(l: QuantLayout): { g: number; G: number; wpr: number } {
  const g = l.groupSize === -1 ? l.cols : l.groupSize;
  if (!(Number.isInteger(g) && g >= 1)) throw new RangeError(`groupSize must be -1 or a positive integer, got ${l.groupSize}`);
  return { g, G: Math.ceil(l.cols / g), wpr: Math.ceil(l.cols / 4) };
}

function uniformsFor(gpu: DawnGpu, l: QuantLayout, total: number, groups: number, perGroup: number): GPUBuffer {
  const { g, G, wpr } = quantGeometry(l);
  return gpu.uniforms([l.rows, l.cols, g, G, total, groups * perGroup, wpr, 0]);
}

/** Launch options: maxWorkgroups caps the grid below WebGPU's 65535 (tests use it to make the kernels stride). */
export interface LaunchOptions {
  maxWorkgroups?: number;
}

async function runOnce(gpu: DawnGpu, code: string, bindings: (GPUBuffer | undefined)[], groups: number): Promise<void> {
  const pipe = await gpu.pipeline(code);
  const group = gpu.bindGroup(pipe, bindings);
  await gpu.submit((enc) => {
    const pass = enc.beginComputePass();
    pass.setPipeline(pipe);
    pass.setBindGroup(0, group);
    pass.dispatchWorkgroups(groups);
    pass.end();
  });
  gpu.counters.dispatches++;
}

/**
 * The params of every (row, group) of W (rows×cols float32 on `gpu`) into `params` (rows×G×2 float32:
 * scale, zero), as quantizer.ts findParams per group. One submit.
 */
export async function groupParamsDawn(gpu: DawnGpu, W: GPUBuffer, l: QuantLayout, q: QuantKernelShape, params: GPUBuffer, o: LaunchOptions = {}): Promise<void> {
  const { G } = quantGeometry(l);
  const total = l.rows * G;
  if (total === 0) return;
  // ≤ 65535 workgroups of 64 (WebGPU's per-dimension limit); the kernel strides over the rest.
  const groups = Math.min(o.maxWorkgroups ?? 65535, Math.ceil(total / 64));
  const u = uniformsFor(gpu, l, total, groups, 64);
  try {
    await runOnce(gpu, groupParamsWgsl(q), [u, W, params], groups);
  } finally {
    u.destroy();
  }
}

/**
 * Round-to-nearest codes of W with `params` (rows×G×2, e.g. from groupParamsDawn) into `codes`
 * (rows × ⌈cols/4⌉ u32 words), and with Q the dequantized values (rows×cols float32), as rtn.ts
 * rtnQuantize. One submit.
 */
export async function rtnCodesDawn(
  gpu: DawnGpu,
  W: GPUBuffer,
  params: GPUBuffer,
  l: QuantLayout,
  maxq: number,
  codes: GPUBuffer,
  Q?: GPUBuffer,
  o: LaunchOptions = {},
): Promise<void> {
  const { wpr } = quantGeometry(l);
  const total = l.rows * wpr;
  if (total === 0) return;
  const groups = Math.min(o.maxWorkgroups ?? 65535, strideGroups(total).groups);
  const u = uniformsFor(gpu, l, total, groups, 256);
  try {
    await runOnce(gpu, rtnCodesWgsl({ maxq, dequant: !!Q }), [u, W, params, codes, Q], groups);
  } finally {
    u.destroy();
  }
}

/**
 * A GPTVQ residual R̂′ from its stored parts, as lopro_dequant.ts dequantizeResidual decodes it: vector v of row r is
 * entry codes[r·V + v] of the codebook of its column group (v·d / g). `codes` holds the rows×V 16-bit codes back to
 * back (two per u32, low half first), `codebooks` groups×K×d float32 (the decoded FP16 values).
 */
export function vqDequantWgsl(): string {
  return /* wgsl */ `
struct P { rows: u32, cols: u32, d: u32, g: u32, K: u32, total: u32, stride: u32, V: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> codes: array<u32>;
@group(0) @binding(2) var<storage, read> codebooks: array<f32>;
@group(0) @binding(3) var<storage, read_write> R: array<f32>; // rows×cols
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3u) {
  for (var i = gid.x; i < p.total; i += p.stride) {
    let word = codes[i / 2u];
    let code = select(word & 0xffffu, word >> 16u, (i & 1u) == 1u);
    let v = i % p.V;
    let c0 = ((v * p.d) / p.g * p.K + code) * p.d;
    let o = (i / p.V) * p.cols + v * p.d;
    for (var t = 0u; t < p.d; t++) {
      R[o + t] = codebooks[c0 + t];
    }
  }
}
`;
}

/** vqDequantWgsl over `codes` (rows×cols/d 16-bit codes) and `codebooks` into `R` (rows×cols float32). One submit. */
export async function vqDequantDawn(
  gpu: DawnGpu,
  codes: GPUBuffer,
  codebooks: GPUBuffer,
  l: { rows: number; cols: number; d: number; groupSize: number; K: number },
  R: GPUBuffer,
): Promise<void> {
  const V = l.cols / l.d,
    total = l.rows * V;
  if (total === 0) return;
  const groups = Math.min(65535, Math.ceil(total / 256));
  const u = gpu.uniforms([l.rows, l.cols, l.d, l.groupSize, l.K, total, groups * 256, V]);
  try {
    await runOnce(gpu, vqDequantWgsl(), [u, codes, codebooks, R], groups);
  } finally {
    u.destroy();
  }
}
