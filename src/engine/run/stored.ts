// A quantized layer as the run checkpoint keeps it, and its (de)serialization to safetensors
// tensors `<layer>::<part>` plus one JSON metadata entry per layer. Two kinds:
//  - 'lopro': quant/lopro_dequant.ts `LoproStoredLayer` (lopro, lopro_v), bit-level parts;
//  - 'baseline': RTN/GPTQ codes (original column order), per-group scale and zero (float32, the
//    reference's values) and the group index of every column.
// Ŵ is always rebuilt from these parts (`dequantizeStored`), so the forward that feeds later
// sub-layers, a resumed run and the exports all see the same weights.

import type { Dtype } from '../../protocol/messages';
import { ErrorCode } from '../../protocol/messages';
import { ProtocolError } from '../../protocol/rpc';
import type { TensorData } from '../io/safetensors_writer';
import type { SafetensorsFile } from '../io/safetensors';
import { dequantizeLoPRo, type LoproStoredLayer } from '../quant/lopro_dequant';
import { dequantizeCode } from '../quant/quantizer';

export interface BaselineStored {
  kind: 'baseline';
  method: 'rtn' | 'gptq';
  rows: number;
  cols: number;
  bits: number;
  sym: boolean;
  groups: number;
  codes: Uint8Array;
  scale: Float32Array;
  zero: Float32Array;
  gIdx: Int32Array;
}

export type StoredLayer = BaselineStored | { kind: 'lopro'; layer: LoproStoredLayer };

export function dequantizeStored(s: StoredLayer): Float32Array {
  if (s.kind === 'lopro') return dequantizeLoPRo(s.layer);
  const { rows, cols, groups: G } = s;
  const out = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++)
    for (let c = 0; c < cols; c++) {
      const k = r * G + s.gIdx[c], i = r * cols + c;
      out[i] = dequantizeCode(s.codes[i], s.scale[k], s.zero[k]);
    }
  return out;
}

type Part = { key: string; dtype: Dtype; shape: number[]; data: ArrayBufferView };

const u16AsI16 = (a: Uint16Array) => new Int16Array(a.buffer, a.byteOffset, a.length);

/** Tensors (in a fixed order, so files are byte-reproducible) and the metadata JSON of one layer. */
export function storedToTensors(name: string, s: StoredLayer): { tensors: TensorData[]; meta: string } {
  const parts: Part[] = [];
  let meta: Record<string, unknown>;
  if (s.kind === 'baseline') {
    const { codes, scale, zero, gIdx, ...rest } = s;
    meta = rest;
    parts.push(
      { key: 'codes', dtype: 'U8', shape: [s.rows, s.cols], data: codes },
      { key: 'scale', dtype: 'F32', shape: [s.rows, s.groups], data: scale },
      { key: 'zero', dtype: 'F32', shape: [s.rows, s.groups], data: zero },
      { key: 'g_idx', dtype: 'I32', shape: [s.cols], data: gIdx },
    );
  } else {
    const L = s.layer;
    const { perm, alphaBits, uCodes, vCodes, sigmaBits, codes, scaleBits, zeros, gIdx, vqCodes, codebookBits, ...rest } = L;
    meta = { kind: 'lopro', ...rest };
    parts.push(
      { key: 'perm', dtype: 'I32', shape: [L.cols], data: perm },
      { key: 'alpha', dtype: 'F16', shape: [alphaBits.length], data: alphaBits },
      { key: 'u', dtype: 'F8_E4M3', shape: [uCodes.length], data: uCodes },
      { key: 'v', dtype: 'F8_E4M3', shape: [vCodes.length], data: vCodes },
      { key: 'sigma', dtype: 'F16', shape: [sigmaBits.length], data: sigmaBits },
    );
    if (codes) parts.push({ key: 'codes', dtype: 'U8', shape: [codes.length], data: codes });
    if (scaleBits) parts.push({ key: 'scale', dtype: 'F16', shape: [scaleBits.length], data: scaleBits });
    if (zeros) parts.push({ key: 'zeros', dtype: 'U8', shape: [zeros.length], data: zeros });
    if (gIdx) parts.push({ key: 'g_idx', dtype: 'I32', shape: [gIdx.length], data: gIdx });
    if (vqCodes) parts.push({ key: 'vq_codes', dtype: 'I16', shape: [vqCodes.length], data: u16AsI16(vqCodes) });
    if (codebookBits) parts.push({ key: 'codebook', dtype: 'F16', shape: [codebookBits.length], data: codebookBits });
  }
  return { tensors: parts.map((p) => ({ name: `${name}::${p.key}`, dtype: p.dtype, shape: p.shape, data: p.data })), meta: JSON.stringify(meta) };
}

function copyBytes(f: SafetensorsFile, name: string): Uint8Array {
  return f.readBytes(name); // fresh, 8-aligned buffer
}

/** Reads layer `name` back from a checkpoint file written with `storedToTensors`. */
export function storedFromFile(f: SafetensorsFile, name: string): StoredLayer {
  const metaText = f.metadata[name];
  if (!metaText) throw new ProtocolError(ErrorCode.IncompatibleCheckpoint, `${f.path} has no entry for layer ${name}`, `${f.path}: ${name}`, 'start the run again without --resume');
  const meta = JSON.parse(metaText) as Record<string, unknown>;
  const has = (k: string) => f.has(`${name}::${k}`);
  const bytes = (k: string) => copyBytes(f, `${name}::${k}`);
  const u8 = (k: string) => bytes(k);
  const u16 = (k: string) => {
    const b = bytes(k);
    return new Uint16Array(b.buffer, b.byteOffset, b.byteLength / 2);
  };
  const i32 = (k: string) => {
    const b = bytes(k);
    return new Int32Array(b.buffer, b.byteOffset, b.byteLength / 4);
  };
  if (meta.kind === 'baseline') {
    const b = bytes('scale'), z = bytes('zero');
    return {
      ...(meta as Omit<BaselineStored, 'codes' | 'scale' | 'zero' | 'gIdx'>),
      kind: 'baseline',
      codes: u8('codes'),
      scale: new Float32Array(b.buffer, b.byteOffset, b.byteLength / 4),
      zero: new Float32Array(z.buffer, z.byteOffset, z.byteLength / 4),
      gIdx: i32('g_idx'),
    };
  }
  const { kind: _kind, ...rest } = meta;
  const layer = {
    ...(rest as Omit<LoproStoredLayer, 'perm' | 'alphaBits' | 'uCodes' | 'vCodes' | 'sigmaBits'>),
    perm: i32('perm'),
    alphaBits: u16('alpha'),
    uCodes: u8('u'),
    vCodes: u8('v'),
    sigmaBits: u16('sigma'),
  } as LoproStoredLayer;
  if (has('codes')) layer.codes = u8('codes');
  if (has('scale')) layer.scaleBits = u16('scale');
  if (has('zeros')) layer.zeros = u8('zeros');
  if (has('g_idx')) layer.gIdx = i32('g_idx');
  if (has('vq_codes')) layer.vqCodes = u16('vq_codes');
  if (has('codebook')) layer.codebookBits = u16('codebook');
  return { kind: 'lopro', layer };
}
