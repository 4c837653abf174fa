// run/export: the run's quantized model in three formats, each written to a temp folder and renamed
// (complete or absent), each optionally verified by loading it back and measuring perplexity.
//  - native: the LoPRo format (run/native.ts) as the run wrote it, copied;
//  - f16: every weight dequantized to F16 safetensors + a plain config.json (no
//    quantization_config) + tokenizer files: loads as an ordinary LlamaForCausalLM;
//  - onnx: run/export_onnx.ts (the model engineer's graph export).

import { copyFileSync, existsSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { ErrorCode, type EngineRequests, type ExportFormat } from '../../protocol/messages';
import { ProtocolError } from '../../protocol/rpc';
import { parseConfigText, stringifyConfig } from '../io/config_json';
import { f32ArrayToF16 } from '../io/dtypes';
import { SafetensorsWriter, type TensorSpec } from '../io/safetensors_writer';
import { throwIfCancelled } from './cancel';
import { evalPath, textKey } from './evaluate';
import { NATIVE_MODEL_FILE, SIDE_FILES, openNativeModel, writeDirAtomic, writeDirAtomicAsync } from './native';
import type { RunHooks } from './run_context';
import { RunDir } from './rundir';

export type ExportParams = EngineRequests['run/export']['params'];
export type ExportResult = EngineRequests['run/export']['result'];

function listFiles(dir: string): { files: string[]; bytes: number } {
  const files = readdirSync(dir).sort();
  return { files, bytes: files.reduce((s, f) => s + statSync(join(dir, f)).size, 0) };
}

/** Dequantized F16 export: standard HF names and shapes, `quantization_config` removed. */
export function writeF16Export(nativeDir: string, outDir: string, signal?: AbortSignal): void {
  const nat = openNativeModel(nativeDir);
  try {
    // Native files keep each layer's tensors where the original weight was (params first):
    // emitting the weight there keeps the original tensor order.
    const specs: TensorSpec[] = [];
    for (const e of nat.file.entries) {
      const k = e.name.indexOf('.lopro.');
      if (k < 0) specs.push({ name: e.name, dtype: 'F16', shape: e.shape });
      else if (e.name.endsWith('.lopro.params')) {
        const layer = e.name.slice(0, k);
        specs.push({ name: `${layer}.weight`, dtype: 'F16', shape: [nat.file.entry(`${layer}.lopro.codes`).shape[0], nat.file.entry(`${layer}.lopro.perm`).shape[0]] });
      }
    }
    writeDirAtomic(outDir, (tmp) => {
      const w = SafetensorsWriter.create(join(tmp, NATIVE_MODEL_FILE), specs, { format: 'pt' });
      try {
        for (const s of specs) {
          throwIfCancelled(signal);
          w.writeTensor(s.name, f32ArrayToF16(nat.readFloat32(s.name)));
        }
        w.finish();
      } catch (e) {
        w.abort();
        throw e;
      }
      const cfg = parseConfigText(readFileSync(join(nativeDir, 'config.json'), 'utf8'));
      delete cfg.quantization_config;
      cfg.dtype = 'float16';
      if ('torch_dtype' in cfg) cfg.torch_dtype = 'float16';
      writeFileSync(join(tmp, 'config.json'), stringifyConfig(cfg));
      for (const f of SIDE_FILES) if (existsSync(join(nativeDir, f))) copyFileSync(join(nativeDir, f), join(tmp, f));
    });
  } finally {
    nat.close();
  }
}

export async function exportRun(p: ExportParams, hooks: RunHooks): Promise<ExportResult> {
  const dir = new RunDir(resolve(p.runDir));
  // Held while the run is read: a layer/apply or a resumed run would change it under the export.
  return dir.withLock(() => exportLocked(dir, p, hooks));
}

async function exportLocked(dir: RunDir, p: ExportParams, hooks: RunHooks): Promise<ExportResult> {
  const m = dir.readManifest();
  if (!m.complete)
    throw new ProtocolError(
      ErrorCode.InvalidParams,
      `${dir.dir} is an unfinished run (${m.completedBlocks}/${m.numBlocks})`,
      dir.dir,
      'finish it with `lopro quantize … --resume` first',
    );
  const outDir = resolve(p.outDir);
  if (outDir === dir.dir || outDir === dir.nativeDir)
    throw new ProtocolError(ErrorCode.InvalidParams, `export folder ${outDir} is inside the run`, '--out', 'choose another folder');
  const format: ExportFormat = p.format;
  hooks.onProgress({ kind: 'begin', title: `exporting ${dir.dir} as ${format} to ${outDir}`, cancellable: true });
  if (format === 'native') {
    writeDirAtomic(outDir, (tmp) => {
      for (const f of readdirSync(dir.nativeDir)) copyFileSync(join(dir.nativeDir, f), join(tmp, f));
    });
  } else if (format === 'f16') {
    if (m.kind !== 'llama')
      throw new ProtocolError(ErrorCode.InvalidParams, 'the f16 export needs a model-folder run (bare tensors have no config.json)', '--format', 'use --format native');
    writeF16Export(dir.nativeDir, outDir, hooks.signal);
  } else if (format === 'onnx') {
    const { exportOnnx } = await import('./export_onnx_adapter');
    await writeDirAtomicAsync(outDir, (tmp) => exportOnnx(dir.nativeDir, tmp, hooks, p.onnx ?? {}));
  } else throw new ProtocolError(ErrorCode.InvalidParams, `unknown export format "${String(format)}"`, 'format', 'native, f16 or onnx');
  const { files, bytes } = listFiles(outDir);
  hooks.onProgress({ kind: 'end', message: `exported ${files.length} files, ${(bytes / 1e6).toFixed(2)} MB` });
  const result: ExportResult = { outDir, files, bytes };
  if (p.verifyText) {
    if (m.kind !== 'llama') throw new ProtocolError(ErrorCode.InvalidParams, 'cannot verify a data-free export by perplexity', 'verifyText');
    const key = textKey(p.verifyText);
    const exported = await evalPath(outDir, [p.verifyText], { ctx: m.ctx, ep: m.config.ep }, hooks);
    result.perplexity = exported[key];
    result.runPerplexity = m.perplexity?.[key] ?? (await evalPath(dir.dir, [p.verifyText], { ctx: m.ctx, ep: m.config.ep }, hooks))[key];
    const rel = Math.abs(result.perplexity / result.runPerplexity - 1);
    // ONNX: MatMulNBits takes its activations as int8 blocks unless exported with float ones (export_onnx.ts
    // floatActivations), which moves the perplexity a little.
    const int8 = format === 'onnx' && !p.onnx?.floatActivations;
    const tolerance = int8 ? 0.005 : 0.001;
    hooks.log(
      rel <= tolerance ? 'info' : 'warn',
      `verify ${format}: export perplexity ${result.perplexity.toFixed(4)} vs run ${result.runPerplexity.toFixed(4)} (${(rel * 100).toFixed(3)}% apart${int8 ? ', int8 activations in the quantized MatMuls' : ''})`,
    );
  }
  return result;
}
