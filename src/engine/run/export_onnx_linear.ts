// ONNX ops for one quantized linear y = Ŵ·x (x: [N, n] → y: [N, m]), spec §4, without forming Ŵ:
//
//   x_p = Gather(x, perm, axis 1)                               (skipped for the identity)
//   x_r = [x_p[:, :b_I], (x_p[:, b_I:] as [N, blocks, b_H]) · H_b/√b_H]    block FWHT as MatMul
//   y   = R̂′(x_r)  +  ((x ⊘ α)·Vᵀ ⊙ σ̂)·Uᵀ                      low-rank branch as two Gemms
//
// R̂′(x_r), the residual in the rotated, permuted space, is one of:
//   - com.microsoft MatMulNBits (2-, 4- or 8-bit codes, 3-bit ones in the 4-bit container; power-of-two
//     group ≥ 16, no act-order group index);
//   - in-graph dequantization: uint8 codes, per-group scales/zeros gathered per column
//     (any bit width, any group index) → Gemm;
//   - lopro_v: codebook Gather by per-vector index → Gemm.
// Dense float layers (unquantized or already dequantized) are a plain Gemm on an initializer.

import type { GraphBuilder, Value } from '../compute/graph';
import { decodeF16, decodeF8E4M3 } from '../quant/fp8';
import { rotationPlanOf, type LoproStoredLayer } from '../quant/lopro_dequant';
import { hadamardMatrix } from '../linalg/fwht';
import { f32ArrayToF16 } from '../io/dtypes';

export interface LinearEmitOptions {
  /** Use com.microsoft MatMulNBits for 2-, 4- and 8-bit residuals (default true). */
  matMulNBits: boolean;
  /**
   * MatMulNBits' accuracy_level: 4 lets the CPU EP quantize each block of activations to int8 and use its integer
   * kernels (the only fast 2-bit path it has; GPU EPs ignore it), 0 keeps float activations.
   */
  accuracyLevel: 0 | 4;
  /** The narrowest MatMulNBits container (2; 4 stores 2-bit codes as 4-bit ones, for EPs whose 2-bit kernel fails). */
  minMatMulNBits: 2 | 4;
}

/** Which ops a layer became (for the export report). */
export type LinearKind = 'dense' | 'matmulnbits' | 'dequant' | 'codebook';

const f32 = (a: Float64Array | ArrayLike<number>) => Float32Array.from(a);

/**
 * x·Wᵀ as MatMul(x, Transpose(W)): W stays [out, in] in the file, ORT folds the Transpose of a constant at
 * load, and the product runs as MatMul — Gemm(transB=1) runs at a third of MatMul's speed on the WebGPU EP
 * (bench/ep_profile.ts), which is where exported models are evaluated on a GPU.
 */
function matmulWt(g: GraphBuilder, x: Value, w: Value): Value {
  return g.op('MatMul', [x, g.op('Transpose', [w], { perm: [1, 0] })]);
}

/** y = x·Wᵀ (+ b) with W [rows, cols] stored as a float32 initializer. */
export function emitDenseLinear(g: GraphBuilder, name: string, w: Float32Array, rows: number, cols: number, x: Value, bias: Value | null): Value {
  const y = matmulWt(g, x, g.initializer(`${name}.weight`, w, [rows, cols]));
  return bias ? g.op('Add', [y, bias]) : y;
}

function isPow2(n: number): boolean {
  return n > 0 && (n & (n - 1)) === 0;
}

/**
 * The MatMulNBits width a layer's codes are stored at: 2, 4 and 8 as they are; 3-bit codes in the 4-bit
 * container (MatMulNBits has no bits = 3; codes and zero points < 8 are the same numbers in 4 bits).
 */
export function matMulNBitsWidth(bits: number, atLeast = 2): number | undefined {
  const w = bits === 3 ? 4 : [2, 4, 8].includes(bits) ? bits : undefined;
  return w === undefined ? undefined : Math.max(w, atLeast);
}

/** Eligible for MatMulNBits: lopro (scalar codes) of 2, 3, 4 or 8 bits, regular groups of a power-of-two width ≥ 16. */
export function canUseMatMulNBits(s: LoproStoredLayer): boolean {
  return s.method === 'lopro' && matMulNBitsWidth(s.bits) !== undefined && !s.gIdx && isPow2(s.groupSize) && s.groupSize >= 16 && !!s.codes && !!s.scaleBits && !!s.zeros;
}

/**
 * Packs codes [m, n] into MatMulNBits' B [m, kBlocks, g·b/8] (b = matMulNBitsWidth) (lowest bits first within a
 * byte, the last block zero-padded), scales [m·kBlocks] float32 and zero points [m, ceil(kBlocks·b/8)]
 * uint8 packed the same way.
 */
export function packMatMulNBits(
  s: LoproStoredLayer,
  atLeast = 2,
): { B: Uint8Array; scales: Float32Array; zp: Uint8Array; kBlocks: number; blob: number; zpCols: number; bits: number } {
  const { rows: m, cols: n, groupSize: g } = s;
  const bits = matMulNBitsWidth(s.bits, atLeast)!;
  const kBlocks = Math.ceil(n / g),
    blob = (g * bits) / 8,
    G = s.groups,
    mask = (1 << bits) - 1;
  if (G !== kBlocks) throw new Error(`MatMulNBits: ${G} groups for ${kBlocks} blocks`);
  const B = new Uint8Array(m * kBlocks * blob);
  const codes = s.codes!;
  for (let i = 0; i < m; i++)
    for (let j = 0; j < n; j++) {
      const bit = (j % g) * bits;
      B[i * kBlocks * blob + Math.floor(j / g) * blob + (bit >> 3)] |= (codes[i * n + j] & mask) << (bit & 7);
    }
  const scales = f32(decodeF16(s.scaleBits!));
  const zpCols = Math.ceil((kBlocks * bits) / 8);
  const zp = new Uint8Array(m * zpCols);
  for (let i = 0; i < m; i++)
    for (let k = 0; k < kBlocks; k++) {
      const bit = k * bits;
      zp[i * zpCols + (bit >> 3)] |= (s.zeros![i * G + k] & mask) << (bit & 7);
    }
  return { B, scales, zp, kBlocks, blob, zpCols, bits };
}

/** Residual R̂′ applied to x_r [N, n] → [N, m]. */
function emitResidual(g: GraphBuilder, name: string, s: LoproStoredLayer, xr: Value, opts: LinearEmitOptions): { y: Value; kind: LinearKind } {
  const { rows: m, cols: n } = s;
  if (opts.matMulNBits && canUseMatMulNBits(s)) {
    const p = packMatMulNBits(s, opts.minMatMulNBits);
    const B = g.initializer(`${name}.qweight`, p.B, [m, p.kBlocks, p.blob]);
    const sc = g.initializer(`${name}.scales`, p.scales, [m * p.kBlocks]);
    const zp = g.initializer(`${name}.qzeros`, p.zp, [m * p.zpCols]);
    const y = g.op(
      'MatMulNBits',
      [xr, B, sc, zp],
      { K: n, N: m, bits: p.bits, block_size: s.groupSize, accuracy_level: opts.accuracyLevel },
      { domain: 'com.microsoft', dtype: 'float32' },
    );
    return { y, kind: 'matmulnbits' };
  }
  if (s.method === 'lopro') {
    // Ŵ′[i, j] = scale[i, grp(j)] · (code[i, j] − zero[i, grp(j)]): per-column Gather of the group tables.
    const G = s.groups;
    const grp = Int32Array.from({ length: n }, (_, j) => (s.gIdx ? s.gIdx[j] : Math.floor(j / s.groupSize)));
    const codes = g.initializer(`${name}.codes`, Uint8Array.from(s.codes!), [m, n]);
    const scales = g.initializer(`${name}.scales`, f32(decodeF16(s.scaleBits!)), [m, G]);
    const zeros = g.initializer(`${name}.zeros`, Float32Array.from(s.zeros!), [m, G]);
    const gi = g.initializer(`${name}.g_idx`, grp, [n]);
    const sE = g.op('Gather', [scales, gi], { axis: 1 }),
      zE = g.op('Gather', [zeros, gi], { axis: 1 });
    const w = g.op('Mul', [g.op('Sub', [g.op('Cast', [codes], { to: 1 }), zE]), sE]);
    return { y: matmulWt(g, xr, w), kind: 'dequant' };
  }
  // lopro_v: index of every d-vector into the flattened codebooks [G·K, d].
  const d = s.vqDim!,
    V = n / d,
    K = s.codebookBits!.length / (s.groups * d);
  const idx = new Int32Array(m * V);
  for (let i = 0; i < m; i++) for (let v = 0; v < V; v++) idx[i * V + v] = Math.floor((v * d) / s.groupSize) * K + s.vqCodes![i * V + v];
  const books = g.initializer(`${name}.codebooks`, f32(decodeF16(s.codebookBits!)), [s.groups * K, d]);
  const w = g.op('Reshape', [g.op('Gather', [books, g.initializer(`${name}.vq_idx`, idx, [m, V])], { axis: 0 }), g.constI64([m, n])]);
  return { y: matmulWt(g, xr, w), kind: 'codebook' };
}

/** One normalised b×b Hadamard matrix per graph and width, shared by every layer (symmetric: x·Hb = (Hb·xᵀ)ᵀ). */
const hadamards = new WeakMap<GraphBuilder, Map<number, Value>>();
function hadamardOf(g: GraphBuilder, b: number): Value {
  let m = hadamards.get(g);
  if (!m) hadamards.set(g, (m = new Map()));
  let v = m.get(b);
  if (!v) m.set(b, (v = g.initializer(`hadamard_${b}`, f32(hadamardMatrix(b)), [b, b])));
  return v;
}

/** FP8 E4M3 factors stored as float16 (every E4M3 value is one exactly) with a Cast: half of float32's bytes. */
function fp8AsF16(g: GraphBuilder, name: string, codes: Uint8Array, dims: number[]): Value {
  return g.op('Cast', [g.initializer(name, f32ArrayToF16(f32(decodeF8E4M3(codes))), dims, 'float16')], { to: 1 });
}

/** The full LoPRo linear (spec §4) on x [N, n] → [N, m]. */
export function emitLoproLinear(g: GraphBuilder, name: string, s: LoproStoredLayer, x: Value, bias: Value | null, opts: LinearEmitOptions): { y: Value; kind: LinearKind } {
  const { rows: m, cols: n } = s;
  let identity = true;
  for (let k = 0; k < n && identity; k++) identity = s.perm[k] === k;
  let xr = identity ? x : g.op('Gather', [x, g.initializer(`${name}.perm`, Int32Array.from(s.perm), [n])], { axis: 1 });
  const plan = rotationPlanOf(s);
  if (plan.block > 0 && plan.salient < n) {
    const b = plan.block,
      rest = n - plan.salient;
    const hb = hadamardOf(g, b);
    const parts = plan.salient > 0 ? g.opMulti('Split', [xr, g.constI64([plan.salient, rest])], { axis: 1 }, { outputs: 2 }) : [null, xr];
    const rot = g.op('Reshape', [g.op('MatMul', [g.op('Reshape', [parts[1]!, g.constI64([-1, rest / b, b])]), hb]), g.constI64([-1, rest])]);
    xr = parts[0] ? g.op('Concat', [parts[0], rot], { axis: 1 }) : rot;
  }
  const res = emitResidual(g, name, s, xr, opts);
  let y = res.y;
  if (s.rank > 0) {
    const alpha = decodeF16(s.alphaBits);
    const invAlpha = g.initializer(
      `${name}.inv_alpha`,
      Float32Array.from(alpha, (a) => 1 / a),
      [n, 1],
    );
    const V = fp8AsF16(g, `${name}.lr_v`, s.vCodes, [s.rank, n]);
    const U = fp8AsF16(g, `${name}.lr_u`, s.uCodes, [m, s.rank]);
    const sigma = g.initializer(`${name}.lr_sigma`, f32(decodeF16(s.sigmaBits)), [1, s.rank]);
    // (x / α)·Vᵀ·diag(σ) = x·(diag(1/α)·Vᵀ·diag(σ)): the product of initializers only, which ORT folds into one
    // [n, r] matrix when it loads the model; the file keeps the compact factors, each call runs one MatMul.
    const vScaled = g.op('Mul', [g.op('Mul', [g.op('Transpose', [V], { perm: [1, 0] }), invAlpha]), sigma]);
    y = g.op('Add', [y, matmulWt(g, g.op('MatMul', [x, vScaled]), U)]);
  }
  if (bias) y = g.op('Add', [y, bias]);
  return { y, kind: res.kind };
}
