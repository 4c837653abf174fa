// ONNX ops for one quantized linear y = Ŵ·x (x: [N, n] → y: [N, m]), spec §4, without forming Ŵ:
//
//   x_p = Gather(x, perm, axis 1)                               (skipped for the identity)
//   x_r = [x_p[:, :b_I], (x_p[:, b_I:] as [N, blocks, b_H]) · H_b/√b_H]    block FWHT as MatMul
//   y   = R̂′(x_r)  +  ((x ⊘ α)·Vᵀ ⊙ σ̂)·Uᵀ                      low-rank branch as two Gemms
//
// R̂′(x_r), the residual in the rotated, permuted space, is one of:
//   - com.microsoft MatMulNBits (4-bit codes, power-of-two group ≥ 16, no act-order group index);
//   - in-graph dequantization: uint8 codes, per-group scales/zeros gathered per column
//     (any bit width, any group index) → Gemm;
//   - lopro_v: codebook Gather by per-vector index → Gemm.
// Dense float layers (unquantized or already dequantized) are a plain Gemm on an initializer.

import type { GraphBuilder, Value } from '../compute/graph';
import { decodeF16, decodeF8E4M3 } from '../quant/fp8';
import { rotationPlanOf, type LoproStoredLayer } from '../quant/lopro_dequant';
import { hadamardMatrix } from '../linalg/fwht';

export interface LinearEmitOptions {
  /** Use com.microsoft MatMulNBits for 4-bit residuals (default true). */
  matMulNBits: boolean;
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

/** Eligible for MatMulNBits: lopro (scalar codes), 4 bits, regular groups of a power-of-two width ≥ 16. */
export function canUseMatMulNBits(s: LoproStoredLayer): boolean {
  return s.method === 'lopro' && s.bits === 4 && !s.gIdx && isPow2(s.groupSize) && s.groupSize >= 16 && !!s.codes && !!s.scaleBits && !!s.zeros;
}

/**
 * Packs codes [m, n] (values 0..15) into MatMulNBits' B [m, kBlocks, g/2] (low nibble first, the
 * last block zero-padded), scales [m·kBlocks] float32 and zero points [m, ceil(kBlocks/2)] uint8.
 */
export function packMatMulNBits4(s: LoproStoredLayer): { B: Uint8Array; scales: Float32Array; zp: Uint8Array; kBlocks: number } {
  const { rows: m, cols: n, groupSize: g } = s;
  const kBlocks = Math.ceil(n / g),
    blob = g / 2,
    G = s.groups;
  if (G !== kBlocks) throw new Error(`MatMulNBits: ${G} groups for ${kBlocks} blocks`);
  const B = new Uint8Array(m * kBlocks * blob);
  const codes = s.codes!;
  for (let i = 0; i < m; i++)
    for (let j = 0; j < n; j++) {
      const byte = i * kBlocks * blob + Math.floor(j / g) * blob + ((j % g) >> 1);
      B[byte] |= (codes[i * n + j] & 15) << ((j & 1) * 4);
    }
  const scales = f32(decodeF16(s.scaleBits!));
  const zpCols = Math.ceil(kBlocks / 2);
  const zp = new Uint8Array(m * zpCols);
  for (let i = 0; i < m; i++) for (let k = 0; k < kBlocks; k++) zp[i * zpCols + (k >> 1)] |= (s.zeros![i * G + k] & 15) << ((k & 1) * 4);
  return { B, scales, zp, kBlocks };
}

/** Residual R̂′ applied to x_r [N, n] → [N, m]. */
function emitResidual(g: GraphBuilder, name: string, s: LoproStoredLayer, xr: Value, opts: LinearEmitOptions): { y: Value; kind: LinearKind } {
  const { rows: m, cols: n } = s;
  if (opts.matMulNBits && canUseMatMulNBits(s)) {
    const p = packMatMulNBits4(s);
    const B = g.initializer(`${name}.qweight`, p.B, [m, p.kBlocks, s.groupSize / 2]);
    const sc = g.initializer(`${name}.scales`, p.scales, [m * p.kBlocks]);
    const zp = g.initializer(`${name}.qzeros`, p.zp, [m * Math.ceil(p.kBlocks / 2)]);
    const y = g.op('MatMulNBits', [xr, B, sc, zp], { K: n, N: m, bits: 4, block_size: s.groupSize }, { domain: 'com.microsoft', dtype: 'float32' });
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
    const Hb = f32(hadamardMatrix(b)); // normalised, symmetric: x·Hb = (Hb·xᵀ)ᵀ
    const hb = g.initializer(`${name}.hadamard`, Hb, [b, b]);
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
      [n],
    );
    const V = g.initializer(`${name}.lr_v`, f32(decodeF8E4M3(s.vCodes)), [s.rank, n]);
    const U = g.initializer(`${name}.lr_u`, f32(decodeF8E4M3(s.uCodes)), [m, s.rank]);
    const sigma = g.initializer(`${name}.lr_sigma`, f32(decodeF16(s.sigmaBits)), [s.rank]);
    const t = g.op('Mul', [matmulWt(g, g.op('Mul', [x, invAlpha]), V), sigma]);
    y = g.op('Add', [y, matmulWt(g, t, U)]);
  }
  if (bias) y = g.op('Add', [y, bias]);
  return { y, kind: res.kind };
}
