// The native LoPRo checkpoint format: each quantized linear `<layer>` (e.g.
// model.layers.0.mlp.down_proj) is replaced by these tensors inside ordinary safetensors files
// (documented in docs/lopro-format.md; bit layout in bitpack.ts):
//
//   <layer>.lopro.params    I32 [8]   version, method (0 lopro, 1 lopro_v), bits, group size g,
//                                      vqDim d, rank r, sym, rotation (0 partial, 1 none, 2 full)
//   <layer>.lopro.b_i       I32 [1]   salient (unrotated) block width actually used
//   <layer>.lopro.b_h       I32 [1]   Hadamard block width actually used (0: nothing rotated)
//   <layer>.lopro.codes     I32 [m, ceil(n·b/32)]          lopro: b-bit codes, rotated+permuted column order
//                           I32 [m, ceil((n/d)·d·b/32)]    lopro_v: (d·b)-bit codebook indices
//   <layer>.lopro.scales    F16 [m, G]                     lopro (G = ceil(n/g))
//   <layer>.lopro.zeros     I32 [m, ceil(G·b/32)]          lopro, asymmetric only: b-bit zero points, packed
//   <layer>.lopro.g_idx     I32 [n]                        lopro with act-order / static groups only
//   <layer>.lopro.codebooks F16 [G, 2^(d·b), d]            lopro_v
//   <layer>.lopro.perm      I16 [n] (I32 when n > 32767)   perm[k] = original column at position k
//   <layer>.lopro.alpha     F16 [n]
//   <layer>.lopro.u         F8_E4M3 [m, r]   û = u·√m        (r > 0 only)
//   <layer>.lopro.v         F8_E4M3 [r, n]   v̂ = v·√n
//   <layer>.lopro.sigma     F16 [r]          σ/√(mn): the factor scales are folded in, so
//                                            W_r = U·diag(σ̂)·V·diag(α)⁻¹ needs nothing else
//   <layer>.lopro.uv_scale  F32 [2]          (√m, √n): the per-factor scales, to recover unit vectors / true σ
//
// Dequantization and inference: quant/lopro_dequant.ts (spec §4).

import { BITS, MAX_CODEBOOK_LOG2, VQ_DIMS, type LayerConfig, type RotationMode } from '../../protocol/config';
import { ProtocolError } from '../../protocol/rpc';
import { ErrorCode, type Dtype } from '../../protocol/messages';
import { packRows, unpackRows, wordsPerRow } from './bitpack';
import type { TensorData } from './safetensors_writer';

/** What a LoPRo layer stores (spec §1.9): the in-memory form of the tensors below, as every driver produces it and every reader gets it back. */
export interface LoproStoredLayer {
  rows: number;
  cols: number;
  method: 'lopro' | 'lopro_v';
  /** Bits per code (lopro) or per vector dimension (lopro_v). */
  bits: number;
  /** Group width g along the transformed columns (cols when one group per row). */
  groupSize: number;
  sym: boolean;
  /** perm[k] = original column at transformed position k. */
  perm: Int32Array;
  /** FP16 bits of α (length cols). */
  alphaBits: Uint16Array;
  rank: number;
  /** FP8 E4M3 codes: U m×r, V r×n; FP16 σ̂ (length r), factor scales folded in. */
  uCodes: Uint8Array;
  vCodes: Uint8Array;
  sigmaBits: Uint16Array;
  /** √m, √n: the multipliers of the unit singular vectors before FP8 (informational; σ̂ includes 1/(uScale·vScale)). */
  uScale: number;
  vScale: number;
  rotation: RotationMode;
  /** b_I and b_H actually used (b_H = 0: nothing rotated). */
  salientBlock: number;
  hadamardBlock: number;
  /** lopro: codes rows×cols (transformed order), FP16 scales rows×G, integer zeros rows×G. */
  codes?: Uint8Array;
  scaleBits?: Uint16Array;
  zeros?: Uint8Array;
  groups: number;
  /** Group of every transformed column when act-order reordered them (else ⌊j/g⌋). */
  gIdx?: Int32Array;
  /** lopro_v: vector dimension, codes rows×(cols/d), FP16 codebooks groups×K×d. */
  vqDim?: number;
  vqCodes?: Uint16Array;
  codebookBits?: Uint16Array;
}

export const LOPRO_FORMAT_VERSION = 1;
const ROTATIONS = ['partial', 'none', 'full'] as const;

/** What a reader must provide (SafetensorsFile or a checkpoint view satisfies it). */
export interface TensorSource {
  has(name: string): boolean;
  entry(name: string): { dtype: Dtype; shape: readonly number[] };
  readBytes(name: string): Uint8Array;
}

export const loproTensorName = (layer: string, part: string) => `${layer}.lopro.${part}`;

/** True when `layer` is stored in the LoPRo format in `src`. */
export function isLoproLayer(src: Pick<TensorSource, 'has'>, layer: string): boolean {
  return src.has(loproTensorName(layer, 'params'));
}

/** The tensors of one layer, in a fixed order, sizes asserted (ggml-style pinned layout). */
export function loproLayerTensors(layer: string, s: LoproStoredLayer): TensorData[] {
  const { rows: m, cols: n, rank: r } = s;
  const name = (p: string) => loproTensorName(layer, p);
  const d = s.method === 'lopro_v' ? (s.vqDim ?? 0) : 1;
  const out: TensorData[] = [];
  const push = (part: string, dtype: Dtype, shape: number[], data: ArrayBufferView) => {
    const numel = shape.reduce((a, b) => a * b, 1);
    const expectBytes = numel * ({ I32: 4, I16: 2, F16: 2, F32: 4, F8_E4M3: 1 } as Record<string, number>)[dtype];
    if (data.byteLength !== expectBytes)
      throw new ProtocolError(ErrorCode.Internal, `${name(part)}: ${data.byteLength} bytes for ${dtype} ${JSON.stringify(shape)} (expected ${expectBytes})`, name(part));
    out.push({ name: name(part), dtype, shape, data });
  };
  push('params', 'I32', [8], Int32Array.from([LOPRO_FORMAT_VERSION, s.method === 'lopro' ? 0 : 1, s.bits, s.groupSize, d, r, s.sym ? 1 : 0, ROTATIONS.indexOf(s.rotation)]));
  push('b_i', 'I32', [1], Int32Array.of(s.salientBlock));
  push('b_h', 'I32', [1], Int32Array.of(s.hadamardBlock));
  if (s.method === 'lopro') {
    push('codes', 'I32', [m, wordsPerRow(n, s.bits)], packRows(s.codes!, m, n, s.bits));
    push('scales', 'F16', [m, s.groups], s.scaleBits!);
    if (!s.sym) push('zeros', 'I32', [m, wordsPerRow(s.groups, s.bits)], packRows(s.zeros!, m, s.groups, s.bits));
    if (s.gIdx) push('g_idx', 'I32', [n], s.gIdx);
  } else {
    const cb = d * s.bits,
      K = 2 ** cb;
    push('codes', 'I32', [m, wordsPerRow(n / d, cb)], packRows(s.vqCodes!, m, n / d, cb));
    push('codebooks', 'F16', [s.groups, K, d], s.codebookBits!);
  }
  push('perm', n > 32767 ? 'I32' : 'I16', [n], n > 32767 ? s.perm : Int16Array.from(s.perm));
  push('alpha', 'F16', [n], s.alphaBits);
  if (r > 0) {
    push('u', 'F8_E4M3', [m, r], s.uCodes);
    push('v', 'F8_E4M3', [r, n], s.vCodes);
    push('sigma', 'F16', [r], s.sigmaBits);
    push('uv_scale', 'F32', [2], Float32Array.of(s.uScale, s.vScale));
  }
  return out;
}

/** Reads one layer back (byte-exact inverse of loproLayerTensors); checks names, dtypes and shapes. */
export function readLoproLayer(src: TensorSource, layer: string): LoproStoredLayer {
  const name = (p: string) => loproTensorName(layer, p);
  const bad = (p: string, what: string) =>
    new ProtocolError(ErrorCode.BadCheckpoint, `${name(p)}: ${what}`, name(p), 'the LoPRo checkpoint is damaged or was written by an incompatible version; re-export it');
  const get = (p: string, dtype: Dtype | Dtype[], shape?: number[]): Uint8Array => {
    if (!src.has(name(p))) throw bad(p, 'tensor missing');
    const e = src.entry(name(p));
    const ok = Array.isArray(dtype) ? dtype.includes(e.dtype) : e.dtype === dtype;
    if (!ok) throw bad(p, `dtype ${e.dtype}, expected ${dtype}`);
    if (shape && JSON.stringify(e.shape) !== JSON.stringify(shape)) throw bad(p, `shape ${JSON.stringify(e.shape)}, expected ${JSON.stringify(shape)}`);
    const b = src.readBytes(name(p));
    return new Uint8Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength)); // own, aligned copy
  };
  const params = new Int32Array(get('params', 'I32', [8]).buffer);
  const [version, methodId, bits, groupSize, d, rank, sym, rotId] = params;
  if (version !== LOPRO_FORMAT_VERSION) throw bad('params', `format version ${version}, this engine reads ${LOPRO_FORMAT_VERSION}`);
  if (!(methodId === 0 || methodId === 1) || !ROTATIONS[rotId]) throw bad('params', `unknown method ${methodId} or rotation ${rotId}`);
  // The widths the config allows (protocol/config.ts) are the only ones a file may claim.
  if (methodId === 0 && !(BITS as readonly number[]).includes(bits)) throw bad('params', `${bits}-bit codes: this engine reads ${BITS.join(', ')}-bit codes`);
  if (methodId === 1 && (!(VQ_DIMS as readonly number[]).includes(d) || !(bits >= 1) || d * bits > MAX_CODEBOOK_LOG2))
    throw bad('params', `a codebook of vqDim ${d} × ${bits} bits: this engine reads vqDim ${VQ_DIMS.join('/')} and at most 2^${MAX_CODEBOOK_LOG2} entries`);
  const permEntry = src.has(name('perm')) ? src.entry(name('perm')) : undefined;
  if (!permEntry) throw bad('perm', 'tensor missing');
  const n = permEntry.shape[0];
  const permBytes = get('perm', ['I16', 'I32'], [n]);
  const perm = permEntry.dtype === 'I16' ? Int32Array.from(new Int16Array(permBytes.buffer)) : new Int32Array(permBytes.buffer);
  const codesEntry = src.entry(name('codes'));
  const m = codesEntry.shape[0];
  const G = Math.ceil(n / groupSize);
  const s: LoproStoredLayer = {
    rows: m,
    cols: n,
    method: methodId === 0 ? 'lopro' : 'lopro_v',
    bits,
    groupSize,
    sym: sym === 1,
    perm,
    alphaBits: new Uint16Array(get('alpha', 'F16', [n]).buffer),
    rank,
    uCodes: rank > 0 ? get('u', 'F8_E4M3', [m, rank]) : new Uint8Array(0),
    vCodes: rank > 0 ? get('v', 'F8_E4M3', [rank, n]) : new Uint8Array(0),
    sigmaBits: rank > 0 ? new Uint16Array(get('sigma', 'F16', [rank]).buffer) : new Uint16Array(0),
    uScale: Math.sqrt(m),
    vScale: Math.sqrt(n),
    rotation: ROTATIONS[rotId],
    salientBlock: new Int32Array(get('b_i', 'I32', [1]).buffer)[0],
    hadamardBlock: new Int32Array(get('b_h', 'I32', [1]).buffer)[0],
    groups: G,
  };
  if (rank > 0) {
    const sc = new Float32Array(get('uv_scale', 'F32', [2]).buffer);
    s.uScale = sc[0];
    s.vScale = sc[1];
  }
  const words = (p: string, rowsP: number, cols: number, b: number) => new Uint32Array(get(p, 'I32', [rowsP, wordsPerRow(cols, b)]).buffer);
  if (s.method === 'lopro') {
    s.codes = unpackRows(words('codes', m, n, bits), m, n, bits, new Uint8Array(m * n));
    s.scaleBits = new Uint16Array(get('scales', 'F16', [m, G]).buffer);
    if (s.sym)
      s.zeros = new Uint8Array(m * G).fill(2 ** (bits - 1)); // (maxq + 1)/2, GPTQ's symmetric zero
    else s.zeros = unpackRows(words('zeros', m, G, bits), m, G, bits, new Uint8Array(m * G));
    if (src.has(name('g_idx'))) s.gIdx = new Int32Array(get('g_idx', 'I32', [n]).buffer);
  } else {
    if (!(d >= 1) || n % d !== 0) throw bad('params', `vqDim ${d} does not divide ${n} columns`);
    const cb = d * bits;
    s.vqDim = d;
    s.vqCodes = unpackRows(words('codes', m, n / d, cb), m, n / d, cb, new Uint16Array((m * n) / d));
    s.codebookBits = new Uint16Array(get('codebooks', 'F16', [G, 2 ** cb, d]).buffer);
  }
  for (let k = 0; k < n; k++) if (!(perm[k] >= 0 && perm[k] < n)) throw bad('perm', `entry ${k} = ${perm[k]} out of range`);
  return s;
}

/**
 * `quantization_config` for config.json. Per-layer values that differ from the run config are in
 * the tensors themselves (`<layer>.lopro.params`), so this states the defaults of the run.
 */
export function loproQuantizationConfig(cfg: LayerConfig, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    quant_method: 'lopro',
    format_version: LOPRO_FORMAT_VERSION,
    variant: cfg.method,
    bits: cfg.method === 'lopro_v' ? cfg.vqBits || cfg.bits : cfg.bits,
    group_size: cfg.groupSize,
    sym: cfg.sym,
    rank: cfg.rank,
    power_iters: cfg.powerIters,
    salient_block: cfg.salientBlock,
    hadamard_block: cfg.hadamardBlock,
    rotation: cfg.rotation,
    beta: cfg.beta,
    damp_percent: cfg.percDamp,
    block_size: cfg.blockSize,
    desc_act: cfg.actOrder,
    ...(cfg.method === 'lopro_v' ? { vq_dim: cfg.vqDim } : {}),
    factor_dtype: 'float8_e4m3fn',
    sigma_dtype: 'float16',
    scale_dtype: 'float16',
    code_packing: 'int32 rows, LSB-first, little-endian (docs/lopro-format.md)',
    ...extra,
  };
}
