// The run's finished product: the native quantized model in <run>/native/ — model.safetensors with
// every non-quantized tensor as stored and every quantized linear as its stored parts
// (`<layer>::<part>`, run/stored.ts), config.json with a `quantization_config`, tokenizer files.
// Written into a temp folder and renamed: it appears complete or not at all. Streamed tensor by
// tensor (SafetensorsWriter), never holding the model in memory.
// `openNativeModel` loads it back and dequantizes layer by layer: perplexity and every other
// export are computed from this file, i.e. from the model as exported.

import { copyFileSync, existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { ErrorCode } from '../../protocol/messages';
import { ProtocolError } from '../../protocol/rpc';
import { SafetensorsFile } from '../io/safetensors';
import { SafetensorsWriter, type TensorSpec } from '../io/safetensors_writer';
import { tempPathFor } from '../io/atomic';
import type { OpenedModel } from './inspect';
import type { RunDir, RunManifest } from './rundir';
import { dequantizeStored, storedFromFile } from './stored';
import { ENGINE_VERSION } from './version';

export const NATIVE_FORMAT = 'lopro-native-1';
export const NATIVE_MODEL_FILE = 'model.safetensors';
/** Files copied next to the weights so the folder is a complete model (tokenizer, generation). */
export const SIDE_FILES = ['tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json', 'generation_config.json'];

/** Writes a folder atomically: `fill(tmp)` writes into a temp folder that is then renamed to `target`. */
export function writeDirAtomic(target: string, fill: (tmp: string) => void): void {
  const tmp = tempPathFor(target);
  mkdirSync(tmp, { recursive: true });
  try {
    fill(tmp);
    rmSync(target, { recursive: true, force: true });
    renameSync(tmp, target);
  } catch (e) {
    rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
}

export function quantizationConfig(m: RunManifest): Record<string, unknown> {
  return {
    quant_method: 'lopro',
    format: NATIVE_FORMAT,
    engine_version: ENGINE_VERSION,
    method: m.config.method,
    bits: m.config.bits,
    group_size: m.config.groupSize,
    sym: m.config.sym,
    rank: m.config.rank,
    layer_overrides: m.config.layerOverrides,
    layers: Object.fromEntries(m.layers.map((l) => [l.name, { method: l.config.method, bits: l.config.bits, bpw: Number(l.bpw.toFixed(5)) }])),
  };
}

export function writeNativeOutput(dir: RunDir, model: OpenedModel, m: RunManifest): void {
  const blocks = new Map<string, SafetensorsFile>(); // layer name → its checkpoint file
  const files: SafetensorsFile[] = [];
  try {
    for (let b = 0; b < m.numBlocks; b++) {
      const f = SafetensorsFile.open(dir.blockFile(b));
      files.push(f);
      for (const k of Object.keys(f.metadata)) blocks.set(k, f);
    }
    const quantized = new Map(model.linears.map((l) => [l.weight, l.name]));
    const specs: TensorSpec[] = [];
    const meta: Record<string, string> = { format: NATIVE_FORMAT, quantization_config: JSON.stringify(quantizationConfig(m)) };
    for (const e of model.ckpt.entries) {
      const layer = quantized.get(e.name);
      if (layer === undefined) {
        specs.push({ name: e.name, dtype: e.dtype, shape: e.shape });
        continue;
      }
      const f = blocks.get(layer);
      if (!f) throw new ProtocolError(ErrorCode.Internal, `layer ${layer} has no checkpoint`, dir.dir);
      meta[layer] = f.metadata[layer];
      for (const pe of f.entries) if (pe.name.startsWith(`${layer}::`)) specs.push({ name: pe.name, dtype: pe.dtype, shape: pe.shape });
    }
    writeDirAtomic(dir.nativeDir, (tmp) => {
      const w = SafetensorsWriter.create(join(tmp, NATIVE_MODEL_FILE), specs, meta);
      try {
        for (const s of specs) {
          const sep = s.name.indexOf('::');
          w.writeTensor(s.name, sep < 0 ? model.ckpt.readBytes(s.name) : blocks.get(s.name.slice(0, sep))!.readBytes(s.name));
        }
        w.finish();
      } catch (e) {
        w.abort();
        throw e;
      }
      if (model.summary.kind === 'llama') {
        const cfg = JSON.parse(readFileSync(join(model.summary.path, 'config.json'), 'utf8')) as Record<string, unknown>;
        cfg.quantization_config = quantizationConfig(m);
        writeFileSync(join(tmp, 'config.json'), JSON.stringify(cfg, null, 2) + '\n');
        for (const s of SIDE_FILES) if (existsSync(join(model.summary.path, s))) copyFileSync(join(model.summary.path, s), join(tmp, s));
      }
    });
  } finally {
    for (const f of files) f.close();
  }
}

export interface NativeModel {
  file: SafetensorsFile;
  /** Quantized layer names (without `.weight`). */
  layers: string[];
  /** Any tensor as float32: quantized weights dequantized from their stored parts. */
  readFloat32(name: string): Float32Array;
  close(): void;
}

export function isNativeDir(dir: string): boolean {
  const f = join(dir, NATIVE_MODEL_FILE);
  if (!existsSync(f)) return false;
  const st = SafetensorsFile.open(f);
  try {
    return st.metadata.format === NATIVE_FORMAT;
  } finally {
    st.close();
  }
}

export function openNativeModel(dirOrFile: string): NativeModel {
  const path = dirOrFile.endsWith('.safetensors') ? dirOrFile : join(dirOrFile, NATIVE_MODEL_FILE);
  const file = SafetensorsFile.open(path);
  if (file.metadata.format !== NATIVE_FORMAT) {
    file.close();
    throw new ProtocolError(ErrorCode.BadCheckpoint, `${path} is not a LoPRo native export (format "${file.metadata.format ?? 'none'}")`, path, `expected ${NATIVE_FORMAT}`);
  }
  const layers = Object.keys(file.metadata).filter((k) => k !== 'format' && k !== 'quantization_config');
  const layerSet = new Set(layers);
  return {
    file,
    layers,
    readFloat32(name: string): Float32Array {
      const layer = name.endsWith('.weight') ? name.slice(0, -'.weight'.length) : '';
      if (layerSet.has(layer)) return dequantizeStored(storedFromFile(file, layer));
      return file.readFloat32(name);
    },
    close: () => file.close(),
  };
}

/** The folder that holds a native model: a run dir's native/, or the folder itself. */
export function nativeDirOf(path: string): string {
  if (existsSync(join(path, 'run.json'))) return join(path, 'native');
  return basename(path) === NATIVE_MODEL_FILE ? dirname(path) : path;
}
