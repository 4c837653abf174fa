// ONNX ops for one quantized linear y = Ŵ·x (x: [N, n] → y: [N, m]), spec §4, without forming Ŵ:
//
//   x_p = GatherElements(x, Expand(perm, [N, n]), axis 1)      (skipped for the identity)
//   x_r = [x_p[:, :b_I], (x_p[:, b_I:] as [N, blocks, b_H]) · H_b/√b_H]    Split, block FWHT as one MatMul, Concat
//   y   = Gemm(x·V′, Uᵀ, C = R̂′(x_r))   with V′ = diag(1/α)·Vᵀ·diag(σ̂)   low-rank branch: MatMul, then a Gemm whose C
//                                                                     is the residual's product (no Add)
// The layers that read one input (q, k, v; gate, up) share the permutation (one GatherElements over their
// concatenated permutations), the rotation (one MatMul for all their rotated blocks) and the low-rank first product
// (x·[V′_q | V′_k | V′_v], then a Split): the decode step of an exported model pays per node, and these nodes were
// most of a LoPRo model's extra time over a plain W2 one (bench/RESULTS.md, issue 18).
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
function hadamardOf(g: GraphBuilder, b: number): Value {
  return memo(g, `hadamard:${b}`, () => g.initializer(`hadamard_${b}`, f32(hadamardMatrix(b)), [b, b]));
}

/** FP8 E4M3 factors stored as float16 (every E4M3 value is one exactly) with a Cast: half of float32's bytes. */
function fp8AsF16(g: GraphBuilder, name: string, codes: Uint8Array, dims: number[]): Value {
  return g.op('Cast', [g.initializer(name, f32ArrayToF16(f32(decodeF8E4M3(codes))), dims, 'float16')], { to: 1 });
}

/** Per-graph memo of values several layers reuse (keyed by what they depend on). */
const memos = new WeakMap<GraphBuilder, Map<string, unknown>>();
function memo<T>(g: GraphBuilder, key: string, make: () => T): T {
  let m = memos.get(g);
  if (!m) memos.set(g, (m = new Map()));
  if (!m.has(key)) m.set(key, make());
  return m.get(key) as T;
}

/**
 * x[:, idx] for x [N, n] (idx of any length k): GatherElements on the index row broadcast to [N, k]. ORT's CPU Gather
 * along axis 1 copies one element per call of a per-index function, so its cost grows with the columns; GatherElements
 * with its Expand does not (bench/RESULTS.md, issue 18).
 */
function gatherColumns(g: GraphBuilder, name: string, idx: Int32Array, x: Value, allColumns: boolean): Value {
  const shape = memo(g, `shape:${x.name}`, () => g.op('Shape', [x]));
  // x's shape [N, n] broadcasts an index row of n; any other length needs [N, 1] (a Slice and a Concat per input).
  const target = allColumns ? shape : memo(g, `rows:${x.name}`, () => g.op('Concat', [g.op('Slice', [shape, g.constI64([0]), g.constI64([1])]), g.constI64([1])], { axis: 0 }));
  return g.op('GatherElements', [x, g.op('Expand', [g.initializer(name, idx, [1, idx.length]), target])], { axis: 1 });
}

/** The rotated blocks [N, k·b] → [N, k·b] through one MatMul with the normalised Hadamard matrix. */
function rotateBlocks(g: GraphBuilder, v: Value, cols: number, b: number): Value {
  return g.op('Reshape', [g.op('MatMul', [g.op('Reshape', [v, g.constI64([-1, cols / b, b])]), hadamardOf(g, b)]), g.constI64([-1, cols])]);
}

/** (x ⊘ α)·Vᵀ·diag(σ) as one [n, r] matrix of initializer products, which ORT folds when it loads the model. */
function lowRankIn(g: GraphBuilder, name: string, s: LoproStoredLayer): Value {
  const invAlpha = g.initializer(
    `${name}.inv_alpha`,
    Float32Array.from(decodeF16(s.alphaBits), (a) => 1 / a),
    [s.cols, 1],
  );
  const V = fp8AsF16(g, `${name}.lr_v`, s.vCodes, [s.rank, s.cols]);
  const sigma = g.initializer(`${name}.lr_sigma`, f32(decodeF16(s.sigmaBits)), [1, s.rank]);
  return g.op('Mul', [g.op('Mul', [g.op('Transpose', [V], { perm: [1, 0] }), invAlpha]), sigma]);
}

/** Uᵀ [r, m] (a Transpose of an initializer: ORT folds it at load). */
function lowRankOut(g: GraphBuilder, name: string, s: LoproStoredLayer): Value {
  return g.op('Transpose', [fp8AsF16(g, `${name}.lr_u`, s.uCodes, [s.rows, s.rank])], { perm: [1, 0] });
}

/** What the layers sharing one input hand each member: its x_r and, with a low-rank part, its first product. */
interface SharedPrefix {
  xr: Value;
  /** x·V'ᵢ [N, rᵢ]. */
  lowRank?: Value;
}

/** Layers that read the same input (q, k, v; gate, up) and whose permutation, rotation and low-rank products can run as one. */
export interface LoproSibling {
  name: string;
  s: LoproStoredLayer;
}

/**
 * The siblings that can share with `self`: the same width and the same rotation block (a rotation there is), at
 * least two of them, `self` among them; the others are emitted alone.
 */
function alikeOf(siblings: LoproSibling[], self: LoproStoredLayer): LoproSibling[] {
  const rotated = (s: LoproStoredLayer) => {
    const p = rotationPlanOf(s);
    return p.block > 0 && p.salient < s.cols ? p.block : 0;
  };
  const b = rotated(self);
  const alike = b ? siblings.filter((m) => m.s.cols === self.cols && rotated(m.s) === b) : [];
  return alike.length >= 2 && alike.some((m) => m.s === self) ? alike : [];
}

/**
 * One GatherElements permutes x for every member ([sal₁…sal_k, rest₁…rest_k]), one Split cuts the salient blocks and
 * the rotated columns of all members, which go through one Hadamard MatMul and are cut again; the low-rank first
 * products x·V'ᵢ are one MatMul on the concatenated [n, Σr] factors, then a Split. `members` come from alikeOf.
 */
function sharedPrefix(g: GraphBuilder, members: LoproSibling[], x: Value): Map<string, SharedPrefix> {
  const plans = members.map((m) => rotationPlanOf(m.s));
  const n = members[0].s.cols,
    b = plans[0].block;
  const key = `group:${x.name}:${members.map((m) => m.name).join(',')}`;
  return memo(g, key, () => {
    const sal = plans.map((p) => p.salient);
    const rest = sal.map((bI) => n - bI);
    const idx = Int32Array.from([...members.flatMap((m, i) => Array.from(m.s.perm.subarray(0, sal[i]))), ...members.flatMap((m, i) => Array.from(m.s.perm.subarray(sal[i])))]);
    const xp = gatherColumns(g, `${members.map((m) => m.name).join('+')}.perm`, idx, x, false);
    const totalRest = rest.reduce((a, c) => a + c, 0);
    const salParts = sal.filter((c) => c > 0);
    const parts = g.opMulti('Split', [xp, g.constI64([...salParts, totalRest])], { axis: 1 }, { outputs: salParts.length + 1 });
    const rot = g.opMulti('Split', [rotateBlocks(g, parts[salParts.length], totalRest, b), g.constI64(rest)], { axis: 1 }, { outputs: members.length });
    const out = new Map<string, SharedPrefix>();
    let k = 0;
    members.forEach((m, i) => out.set(m.name, { xr: sal[i] > 0 ? g.op('Concat', [parts[k++], rot[i]], { axis: 1 }) : rot[i] }));
    const ranked = members.filter((m) => m.s.rank > 0);
    if (ranked.length === 1) out.get(ranked[0].name)!.lowRank = g.op('MatMul', [x, lowRankIn(g, ranked[0].name, ranked[0].s)]);
    else if (ranked.length > 1) {
      // (A zero-padded Uᵀ per layer instead of the Split: slower, the padding's products cost more than the Split.)
      const t = g.op('MatMul', [
        x,
        g.op(
          'Concat',
          ranked.map((m) => lowRankIn(g, m.name, m.s)),
          { axis: 1 },
        ),
      ]);
      const ts = g.opMulti('Split', [t, g.constI64(ranked.map((m) => m.s.rank))], { axis: 1 }, { outputs: ranked.length });
      ranked.forEach((m, i) => {
        out.get(m.name)!.lowRank = ts[i];
      });
    }
    return out;
  });
}

/** x_r = x[:, perm]·blockdiag(I_{b_I}, H_b, H_b, …) on x [N, n] → [N, n] (spec §4) for one layer. */
function permutedRotation(g: GraphBuilder, name: string, s: LoproStoredLayer, x: Value): Value {
  const n = s.cols;
  let identity = true;
  for (let k = 0; k < n && identity; k++) identity = s.perm[k] === k;
  const xp = identity ? x : gatherColumns(g, `${name}.perm`, Int32Array.from(s.perm), x, true);
  const { block: b, salient: bI } = rotationPlanOf(s);
  if (!(b > 0 && bI < n)) return xp;
  if (bI === 0) return rotateBlocks(g, xp, n, b);
  const [sal, rest] = g.opMulti('Split', [xp, g.constI64([bI, n - bI])], { axis: 1 }, { outputs: 2 });
  return g.op('Concat', [sal, rotateBlocks(g, rest, n - bI, b)], { axis: 1 });
}

/**
 * The full LoPRo linear (spec §4) on x [N, n] → [N, m]: y = R̂′(x_r) + ((x ⊘ α)·Vᵀ ⊙ σ̂)·Uᵀ (+ bias), the low-rank
 * term as the Gemm whose C is the residual's product. With `siblings` (the layers reading the same x, this one
 * included), the permutation, the rotation and the low-rank first product are computed once for those alike (the
 * same width and rotation block).
 */
export function emitLoproLinear(
  g: GraphBuilder,
  name: string,
  s: LoproStoredLayer,
  x: Value,
  bias: Value | null,
  opts: LinearEmitOptions,
  siblings: LoproSibling[] = [],
): { y: Value; kind: LinearKind } {
  const alike = alikeOf(siblings, s);
  const shared = alike.length ? sharedPrefix(g, alike, x).get(name) : undefined;
  const res = emitResidual(g, name, s, shared ? shared.xr : permutedRotation(g, name, s, x), opts);
  let y = res.y;
  if (s.rank > 0) {
    const t = shared?.lowRank ?? g.op('MatMul', [x, lowRankIn(g, name, s)]);
    y = g.op('Gemm', [t, lowRankOut(g, name, s), y]);
  }
  if (bias) y = g.op('Add', [y, bias]);
  return { y, kind: res.kind };
}
