// The fingerprint of a run: what must be equal for a checkpoint to be resumed. It names each part
// separately so that a refusal can say which one differs.
//
// model: sha256 over, for every file of the checkpoint (sorted by name), its name, its size, the
//   whole safetensors header and SAMPLE_COUNT samples of SAMPLE_BYTES spread evenly over the data
//   section (plus its last bytes); small JSON files (config, tokenizer) are hashed whole. This is
//   a sampled hash (reading a 14 GB model whole would take minutes): a change in the header, the
//   size or any sampled region is caught; an edit of a few bytes between samples is not.
// config: sha256 of the canonical JSON of the QuantizeConfig, without the keys that cannot change
//   the output's meaning (memoryBudgetMB; where the math runs: ep, backend, threads; the reports-only
//   compare, keepHessians; calibText is replaced by the calibration text's own hash).
// calib: sha256 of the calibration text's bytes ('' in data-free mode).

import { createHash } from 'node:crypto';
import { closeSync, openSync, readSync, readFileSync, statSync, readdirSync } from 'node:fs';
import { basename, join } from 'node:path';
import type { QuantizeConfig } from '../../protocol/config';
import { ENGINE_VERSION, RUN_FORMAT } from './version';

const SAMPLE_COUNT = 64;
const SAMPLE_BYTES = 4096;

export interface RunFingerprint {
  model: string;
  config: string;
  calib: string;
  engine: string;
}

/** Files that make up a model: a bare .safetensors, or a folder's safetensors + JSON files. */
export function modelFiles(modelPath: string): string[] {
  const st = statSync(modelPath);
  if (st.isFile()) return [modelPath];
  return readdirSync(modelPath)
    .filter((f) => f.endsWith('.safetensors') || f.endsWith('.json'))
    .sort()
    .map((f) => join(modelPath, f));
}

function hashFileSampled(h: ReturnType<typeof createHash>, file: string): void {
  const size = statSync(file).size;
  h.update(`${basename(file)}\0${size}\0`);
  if (!file.endsWith('.safetensors') || size < 8) {
    h.update(readFileSync(file));
    return;
  }
  const fd = openSync(file, 'r');
  try {
    const head = Buffer.alloc(8);
    readSync(fd, head, 0, 8, 0);
    // Clamp: a corrupt length must not make us allocate gigabytes (the reader reports it properly).
    const n = Math.min(Number(head.readBigUInt64LE(0)), size - 8, 100 * 1024 * 1024);
    const header = Buffer.alloc(n);
    readSync(fd, header, 0, n, 8);
    h.update(head).update(header);
    const dataStart = 8 + n,
      dataLen = size - dataStart;
    const buf = Buffer.alloc(SAMPLE_BYTES);
    const offsets = new Set<number>();
    for (let i = 0; i < SAMPLE_COUNT; i++) offsets.add(dataStart + Math.floor((i * Math.max(0, dataLen - SAMPLE_BYTES)) / Math.max(1, SAMPLE_COUNT - 1)));
    for (const off of [...offsets].sort((a, b) => a - b)) {
      const got = readSync(fd, buf, 0, Math.min(SAMPLE_BYTES, size - off), off);
      h.update(buf.subarray(0, got));
    }
  } finally {
    closeSync(fd);
  }
}

export function hashModel(modelPath: string): string {
  const h = createHash('sha256');
  for (const f of modelFiles(modelPath)) hashFileSampled(h, f);
  return h.digest('hex');
}

/**
 * Config keys that cannot change what the output means, left out of the fingerprint: a run may be
 * resumed on another EP, backend or thread count, and with or without the RTN/GPTQ comparison.
 */
const NON_OUTPUT_KEYS = new Set(['memoryBudgetMB', 'ep', 'backend', 'threads', 'compare', 'keepHessians', 'calibText']);

/** JSON with sorted keys at every level, so that key order never changes a hash. */
export function canonicalJson(x: unknown): string {
  if (Array.isArray(x)) return '[' + x.map(canonicalJson).join(',') + ']';
  if (x && typeof x === 'object') {
    const o = x as Record<string, unknown>;
    return (
      '{' +
      Object.keys(o)
        .sort()
        .filter((k) => o[k] !== undefined)
        .map((k) => JSON.stringify(k) + ':' + canonicalJson(o[k]))
        .join(',') +
      '}'
    );
  }
  return JSON.stringify(x);
}

export function outputConfig(config: QuantizeConfig): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(config)) if (!NON_OUTPUT_KEYS.has(k)) out[k] = v;
  return out;
}

export function computeFingerprint(modelPath: string, config: QuantizeConfig, calibBytes: Uint8Array | undefined): RunFingerprint {
  return {
    model: hashModel(modelPath),
    config: createHash('sha256')
      .update(canonicalJson(outputConfig(config)))
      .digest('hex'),
    calib: calibBytes ? createHash('sha256').update(calibBytes).digest('hex') : '',
    engine: `${ENGINE_VERSION}/run-format-${RUN_FORMAT}`,
  };
}

/** Why a checkpoint cannot be resumed, or undefined when it can. Names what differs. */
export function fingerprintMismatch(saved: RunFingerprint, now: RunFingerprint, savedConfig?: Record<string, unknown>, nowConfig?: Record<string, unknown>): string | undefined {
  const reasons: string[] = [];
  if (saved.engine !== now.engine) reasons.push(`it was written by engine ${saved.engine}, this is ${now.engine}`);
  if (saved.model !== now.model) reasons.push('the model files differ (content hash)');
  if (saved.calib !== now.calib) reasons.push('the calibration text differs');
  if (saved.config !== now.config) {
    const diff: string[] = [];
    if (savedConfig && nowConfig) {
      for (const k of new Set([...Object.keys(savedConfig), ...Object.keys(nowConfig)])) {
        if (canonicalJson(savedConfig[k]) !== canonicalJson(nowConfig[k])) diff.push(`${k}: ${canonicalJson(savedConfig[k])} → ${canonicalJson(nowConfig[k])}`);
      }
    }
    reasons.push(`the config differs${diff.length ? ` (${diff.join('; ')})` : ''}`);
  }
  return reasons.length ? reasons.join('; ') : undefined;
}
