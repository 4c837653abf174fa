// The run's finished product: the native quantized model in <run>/native/ — model.safetensors with
// every non-quantized tensor as stored and every quantized linear replaced by its LoPRo-format
// tensors (`<layer>.lopro.*`, io/lopro_format.ts; RTN/GPTQ layers as rank 0, unrotated),
// config.json with a `quantization_config`, tokenizer files.
// Written into a temp folder and renamed: it appears complete or not at all. Streamed tensor by
// tensor (SafetensorsWriter), never holding the model in memory.
// `openNativeModel` loads it back and dequantizes layer by layer: perplexity and every other
// export are computed from this file, i.e. from the model as exported.

import { parseConfigText, stringifyConfig } from '../io/config_json';
import { copyFileSync, existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { ErrorCode } from '../../protocol/messages';
import { ProtocolError } from '../../protocol/rpc';
import { SafetensorsFile } from '../io/safetensors';
import { SafetensorsWriter, type TensorSpec } from '../io/safetensors_writer';
import { tempPathFor, writeError } from '../io/atomic';
import type { OpenedModel } from './inspect';
import type { RunDir, RunManifest } from './rundir';
import { dequantizeStored } from './stored';
import { loproQuantizationConfig, readLoproLayer } from '../io/lopro_format';
import { pickLayerConfig } from '../../protocol/config';
import { ENGINE_VERSION } from './version';

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
    throw dirWriteFailed(target, tmp, e);
  }
}

/**
 * Removes the temp folder. A system error (a full disk, no permission) becomes an E_IO, and an E_IO names the
 * output folder the user asked for, not the temp folder that is gone.
 */
function dirWriteFailed(target: string, tmp: string, e: unknown): unknown {
  rmSync(tmp, { recursive: true, force: true });
  if (e instanceof ProtocolError) {
    if (e.code !== ErrorCode.Io) return e;
    const named = (t: string | undefined) => t?.split(tmp).join(target);
    return new ProtocolError(e.code, named(e.message)!, named(e.where), e.hint);
  }
  const code = (e as NodeJS.ErrnoException)?.code;
  return typeof code === 'string' && /^E[A-Z]+$/.test(code) ? writeError(target, e, 'write') : e;
}

/** writeDirAtomic for an asynchronous `fill`. */
export async function writeDirAtomicAsync(target: string, fill: (tmp: string) => Promise<void>): Promise<void> {
  const tmp = tempPathFor(target);
  mkdirSync(tmp, { recursive: true });
  try {
    await fill(tmp);
    rmSync(target, { recursive: true, force: true });
    renameSync(tmp, target);
  } catch (e) {
    throw dirWriteFailed(target, tmp, e);
  }
}

export function quantizationConfig(m: RunManifest): Record<string, unknown> {
  return loproQuantizationConfig(pickLayerConfig(m.config), {
    engine_version: ENGINE_VERSION,
    layer_overrides: m.config.layerOverrides,
    layers: Object.fromEntries(m.layers.map((l) => [l.name, { method: l.config.method, bits: l.config.bits, rank: l.config.rank, bpw: Number(l.bpw.toFixed(5)) }])),
  });
}

/** Layer names stored in LoPRo format in a safetensors file (from their `.lopro.params` tensors). */
export function loproLayersIn(f: SafetensorsFile): string[] {
  const suffix = '.lopro.params';
  return f.entries.filter((e) => e.name.endsWith(suffix)).map((e) => e.name.slice(0, -suffix.length));
}

export function writeNativeOutput(dir: RunDir, model: OpenedModel, m: RunManifest): void {
  const blocks = new Map<string, SafetensorsFile>(); // layer name → its checkpoint file
  const files: SafetensorsFile[] = [];
  try {
    for (let b = 0; b < m.numBlocks; b++) {
      const f = SafetensorsFile.open(dir.blockFile(b));
      files.push(f);
      for (const layer of loproLayersIn(f)) blocks.set(layer, f);
    }
    const quantized = new Map(model.linears.map((l) => [l.weight, l.name]));
    // Each quantized weight's tensors take the place of the original weight: the file keeps the
    // checkpoint's tensor order.
    const specs: (TensorSpec & { src: { readBytes(n: string): Uint8Array } })[] = [];
    for (const e of model.ckpt.entries) {
      const layer = quantized.get(e.name);
      if (layer === undefined) {
        specs.push({ name: e.name, dtype: e.dtype, shape: e.shape, src: model.ckpt });
        continue;
      }
      const f = blocks.get(layer);
      if (!f) throw new ProtocolError(ErrorCode.Internal, `layer ${layer} has no checkpoint`, dir.dir);
      for (const pe of f.entries) if (pe.name.startsWith(`${layer}.lopro.`)) specs.push({ name: pe.name, dtype: pe.dtype, shape: pe.shape, src: f });
    }
    writeDirAtomic(dir.nativeDir, (tmp) => {
      const w = SafetensorsWriter.create(join(tmp, NATIVE_MODEL_FILE), specs, { format: 'pt', quant_method: 'lopro' });
      try {
        for (const s of specs) w.writeTensor(s.name, s.src.readBytes(s.name));
        w.finish();
      } catch (e) {
        w.abort();
        throw e;
      }
      if (model.summary.kind === 'llama') {
        const cfg = parseConfigText(readFileSync(join(model.summary.path, 'config.json'), 'utf8'));
        cfg.quantization_config = quantizationConfig(m);
        writeFileSync(join(tmp, 'config.json'), stringifyConfig(cfg));
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

/** A folder whose model.safetensors holds LoPRo-format layers. */
export function isNativeDir(dir: string): boolean {
  const f = join(dir, NATIVE_MODEL_FILE);
  if (!existsSync(f)) return false;
  const st = SafetensorsFile.open(f);
  try {
    return loproLayersIn(st).length > 0;
  } finally {
    st.close();
  }
}

export function openNativeModel(dirOrFile: string): NativeModel {
  const path = dirOrFile.endsWith('.safetensors') ? dirOrFile : join(dirOrFile, NATIVE_MODEL_FILE);
  const file = SafetensorsFile.open(path);
  const layers = loproLayersIn(file);
  if (!layers.length) {
    file.close();
    throw new ProtocolError(ErrorCode.BadCheckpoint, `${path} holds no LoPRo-format layer`, path, 'pass a native export or a run directory');
  }
  const layerSet = new Set(layers);
  return {
    file,
    layers,
    readFloat32(name: string): Float32Array {
      // HF weights are `<layer>.weight`; a bare file's tensor without that suffix is its own layer.
      const layer = name.endsWith('.weight') && layerSet.has(name.slice(0, -'.weight'.length)) ? name.slice(0, -'.weight'.length) : name;
      if (layerSet.has(layer)) return dequantizeStored(readLoproLayer(file, layer));
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
