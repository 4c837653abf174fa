// Loads the golden GPTQ/RTN cases (../../../shared/golden/README.md §1–3): W, X, H, Q, codes, scale,
// zero, g_idx, perm and the string metadata. A tiny local safetensors parser (F32/I32 only) until
// src/engine/io/safetensors.ts lands; the files are small, so each is read whole.

import { readFileSync, readdirSync, existsSync } from 'node:fs';
import { join, resolve, basename } from 'node:path';

export const repoRoot = resolve(__dirname, '../..');
export const repoCasesDir = join(repoRoot, 'test/golden/cases');
/** CI has shared/ beside the clone; the 512×1024 case lives only there (14.7 MB). */
export const sharedCasesDir = resolve(repoRoot, '../shared/golden/cases');
export const SHARED_ONLY_CASE = 's512x1024_gptq_w4_g128_sym.safetensors';

export interface GoldenCase {
  name: string;
  kind: 'gptq' | 'rtn';
  rows: number;
  cols: number;
  bits: number;
  groupSize: number;
  sym: boolean;
  actOrder: boolean;
  staticGroups: boolean;
  percDamp: number;
  blockSize: number;
  /** The reference's printed error (GPTQ only; NaN for RTN). */
  refError: number;
  meta: Record<string, string>;
  W: Float32Array;
  /** Calibration activations, tokens×cols (the add_batch inputs concatenated). */
  X: Float32Array;
  H: Float32Array;
  Q: Float32Array;
  codes: Int32Array;
  scale: Float32Array;
  zero: Float32Array;
  gIdx: Int32Array;
  perm: Int32Array;
}

interface Entry { dtype: string; shape: number[]; data_offsets: [number, number] }

function readSafetensors(file: string): { tensors: Map<string, Float32Array | Int32Array>; meta: Record<string, string> } {
  const buf = readFileSync(file);
  const n = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + n).toString('utf8')) as Record<string, Entry | Record<string, string>>;
  const base = 8 + n;
  const tensors = new Map<string, Float32Array | Int32Array>();
  let meta: Record<string, string> = {};
  for (const [name, e] of Object.entries(header)) {
    if (name === '__metadata__') { meta = e as Record<string, string>; continue; }
    const { dtype, shape, data_offsets: [b, end] } = e as Entry;
    const count = shape.reduce((a, s) => a * s, 1);
    if (end - b !== count * 4) throw new Error(`${file}: ${name} has ${end - b} bytes for shape ${shape}`);
    // Copy into an aligned buffer (the data offsets need not be 4-byte aligned relative to the file).
    const bytes = new Uint8Array(buf.subarray(base + b, base + end));
    if (dtype === 'F32') tensors.set(name, new Float32Array(bytes.buffer, 0, count));
    else if (dtype === 'I32') tensors.set(name, new Int32Array(bytes.buffer, 0, count));
    else throw new Error(`${file}: ${name} has unsupported dtype ${dtype}`);
  }
  return { tensors, meta };
}

export function loadCase(file: string): GoldenCase {
  const { tensors, meta } = readSafetensors(file);
  const get = <T extends Float32Array | Int32Array>(k: string): T => {
    const t = tensors.get(k);
    if (!t) throw new Error(`${file}: missing tensor ${k}`);
    return t as T;
  };
  return {
    name: basename(file, '.safetensors'),
    kind: meta.kind as 'gptq' | 'rtn',
    rows: Number(meta.rows),
    cols: Number(meta.columns),
    bits: Number(meta.bits),
    groupSize: Number(meta.groupsize),
    sym: meta.sym === 'true',
    actOrder: meta.actorder === 'true',
    staticGroups: meta.static_groups === 'true',
    percDamp: Number(meta.percdamp),
    blockSize: Number(meta.blocksize),
    refError: meta.kind === 'gptq' ? Number(meta.ref_error) : NaN,
    meta,
    W: get('W'), X: get('X'), H: get('H'), Q: get('Q'), codes: get('codes'), scale: get('scale'), zero: get('zero'),
    gIdx: get('g_idx'), perm: get('perm'),
  };
}

/** Every case file: the repo's copies, plus the shared-only 512×1024 case when shared/ is present. */
export function caseFiles(kind: 'gptq' | 'rtn'): { files: string[]; missing: string[] } {
  const files = readdirSync(repoCasesDir).filter((f) => f.endsWith('.safetensors') && f.includes(`_${kind}_`)).sort().map((f) => join(repoCasesDir, f));
  const missing: string[] = [];
  if (SHARED_ONLY_CASE.includes(`_${kind}_`) && !files.some((f) => basename(f) === SHARED_ONLY_CASE)) {
    const p = join(sharedCasesDir, SHARED_ONLY_CASE);
    if (existsSync(p)) files.push(p);
    else missing.push(p);
  }
  return { files, missing };
}
