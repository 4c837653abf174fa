// Loads the golden GPTQ/RTN cases (../../../shared/golden/README.md §1–3): W, X, H, Q, codes, scale,
// zero, g_idx, perm and the string metadata, through the engine's own safetensors reader (so the
// golden tests also exercise it on files written by an independent writer).

import { readdirSync, existsSync } from 'node:fs';
import { SafetensorsFile } from '../../src/engine/io/safetensors';
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

export function loadCase(file: string): GoldenCase {
  const f = SafetensorsFile.open(file);
  const meta = { ...f.metadata };
  const get = <T extends Float32Array | Int32Array>(k: string): T => {
    const t = f.readTyped(k);
    if (!(t instanceof Float32Array || t instanceof Int32Array)) throw new Error(`${file}: ${k} is not F32/I32`);
    return t as T;
  };
  const c: GoldenCase = {
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
    W: get('W'),
    X: get('X'),
    H: get('H'),
    Q: get('Q'),
    codes: get('codes'),
    scale: get('scale'),
    zero: get('zero'),
    gIdx: get('g_idx'),
    perm: get('perm'),
  };
  f.close();
  return c;
}

/** Every case file: the repo's copies, plus the shared-only 512×1024 case when shared/ is present. */
export function caseFiles(kind: 'gptq' | 'rtn'): { files: string[]; missing: string[] } {
  const files = readdirSync(repoCasesDir)
    .filter((f) => f.endsWith('.safetensors') && f.includes(`_${kind}_`))
    .sort()
    .map((f) => join(repoCasesDir, f));
  const missing: string[] = [];
  if (SHARED_ONLY_CASE.includes(`_${kind}_`) && !files.some((f) => basename(f) === SHARED_ONLY_CASE)) {
    const p = join(sharedCasesDir, SHARED_ONLY_CASE);
    if (existsSync(p)) files.push(p);
    else missing.push(p);
  }
  return { files, missing };
}
