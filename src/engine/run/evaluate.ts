// Perplexity (protocol: non-overlapping windows, model/perplexity.ts) of whatever a path holds:
// a run directory (its native output, loaded back from disk — the model as exported), a native
// export, an F16 export or any float model folder of a supported family.

import { existsSync } from 'node:fs';
import { basename, join, resolve } from 'node:path';
import type { ExecutionProviderName } from '../../protocol/config';
import { ErrorCode } from '../../protocol/messages';
import { ProtocolError } from '../../protocol/rpc';
import { getRuntime } from '../compute/runtime';
import { openCheckpoint } from '../io/checkpoint';
import { protocolCtx } from '../model/calibration';
import { checkModelTensors, loadModelConfig, type ModelConfig } from '../model/config';
import { perplexity, type PerplexityResult } from '../model/perplexity';
import { loadTokenizer, tokenizeFile } from '../model/tokenizer';
import { isNativeDir, openNativeModel } from './native';
import type { RunHooks } from './run_context';
import { RunDir } from './rundir';

export interface EvalOptions {
  /** Window length; 0 = the run's calibration ctx, else the model's protocol ctx. */
  ctx: number;
  /** Execution provider; undefined = the run's own (for a run directory), else 'auto'. */
  ep?: ExecutionProviderName;
  /**
   * Also the KL divergence of the model's next-token distributions from a reference model's: a float
   * folder of the same shape, or '' = the run's own model (a run directory only).
   */
  klReference?: string;
}

export interface EvalResult {
  perplexity: Record<string, number>;
  /** Mean KL(reference ‖ model) in nats per predicted position, by text (with klReference). */
  kl?: Record<string, number>;
  /** The reference folder the KL was measured against. */
  reference?: string;
}

/** Result key of a text file: its base name without extension (persuasion.txt → persuasion). */
export const textKey = (file: string) => basename(file).replace(/\.[^.]*$/, '');

export async function evalPath(path: string, texts: string[], opts: EvalOptions, hooks: RunHooks): Promise<Record<string, number>> {
  return (await evaluate(path, texts, opts, hooks)).perplexity;
}

export async function evaluate(path: string, texts: string[], opts: EvalOptions, hooks: RunHooks): Promise<EvalResult> {
  let dir = resolve(path);
  let ctx = opts.ctx;
  let reference = opts.klReference;
  if (existsSync(join(dir, 'run.json'))) {
    const m = new RunDir(dir).readManifest();
    if (m.kind !== 'llama')
      throw new ProtocolError(
        ErrorCode.InvalidParams,
        `${dir} quantized bare tensors (data-free): there is no model to evaluate`,
        dir,
        'perplexity needs a run of a model folder (config.json + safetensors)',
      );
    if (!m.complete)
      throw new ProtocolError(
        ErrorCode.InvalidParams,
        `${dir} is an unfinished run (${m.completedBlocks}/${m.numBlocks} blocks)`,
        dir,
        'finish it with `lopro quantize … --resume` first',
      );
    if (!ctx) ctx = m.ctx;
    opts = { ...opts, ep: opts.ep ?? m.config.ep };
    if (reference === '') reference = m.modelPath;
    dir = join(dir, 'native');
  }
  if (reference === '')
    throw new ProtocolError(
      ErrorCode.InvalidParams,
      `${dir} is not a run directory: name the float model to measure KL against`,
      '--reference',
      'pass --reference FLOAT_MODEL_DIR',
    );
  if (!existsSync(join(dir, 'config.json')))
    throw new ProtocolError(ErrorCode.BadConfig, `${dir} has no config.json`, dir, 'pass a run directory, an export folder or a Hugging Face model folder');
  const cfg = loadModelConfig(dir);
  const T = protocolCtx(cfg.maxPositions, ctx);
  const rt = await getRuntime(opts.ep ?? 'auto');
  const onnx = join(dir, 'model.onnx');
  if (existsSync(onnx)) {
    if (reference !== undefined) throw new ProtocolError(ErrorCode.InvalidParams, `KL is measured on run, native and float folders, not on an ONNX export (${onnx})`, '--kl');
    // An ONNX export: ONNX Runtime runs the exported file itself.
    const { perplexityOnnx } = await import('./export_onnx_eval');
    return perTextPerplexity(`${onnx}`, dir, cfg.vocabSize, T, texts, hooks, (ids, o) => perplexityOnnx(onnx, ids, { ...o, rt }));
  }
  const native = isNativeDir(dir);
  const weights = native ? openNativeModel(dir) : openCheckpoint(dir);
  try {
    // A float folder: check every tensor's shape against config.json first (a same-size,
    // misshaped tensor would otherwise be evaluated into a meaningless perplexity).
    if (!native) {
      const ckpt = weights as ReturnType<typeof openCheckpoint>;
      checkModelTensors(
        cfg,
        (n) => (ckpt.has(n) ? ckpt.entry(n).shape : undefined),
        dir,
        ckpt.entries.map((e) => e.name),
      );
    }
    const ref = reference === undefined ? undefined : openReference(reference, cfg);
    try {
      const r = await perTextPerplexity(dir, dir, cfg.vocabSize, T, texts, hooks, (ids, o) =>
        perplexity(cfg, ids, (name) => weights.readFloat32(name), { ...o, rt, reference: ref && ((name) => ref.readFloat32(name)) }),
      );
      return ref ? { ...r, reference: resolve(reference!) } : r;
    } finally {
      ref?.close();
    }
  } finally {
    weights.close();
  }
}

/** A float model folder to measure KL against: the same family and shapes as the evaluated model. */
function openReference(path: string, cfg: ModelConfig): ReturnType<typeof openCheckpoint> {
  const dir = resolve(path);
  const rc = loadModelConfig(dir);
  for (const k of ['family', 'hiddenSize', 'numLayers', 'vocabSize', 'numHeads', 'numKvHeads', 'intermediateSize'] as const)
    if (rc[k] !== cfg[k])
      throw new ProtocolError(
        ErrorCode.ShapeMismatch,
        `the KL reference ${dir} has ${k} ${String(rc[k])}, the evaluated model ${String(cfg[k])}`,
        join(dir, 'config.json'),
        'use the float model the run quantized',
      );
  const ckpt = openCheckpoint(dir);
  try {
    checkModelTensors(
      rc,
      (n) => (ckpt.has(n) ? ckpt.entry(n).shape : undefined),
      dir,
      ckpt.entries.map((e) => e.name),
    );
  } catch (e) {
    ckpt.close();
    throw e;
  }
  return ckpt;
}

type PerplexityFn = (ids: Int32Array, o: { ctx: number; signal?: AbortSignal; onProgress: (done: number, total: number) => void }) => Promise<PerplexityResult>;

/** Tokenizes each text with the folder's tokenizer and measures it, with begin/report/end progress. */
async function perTextPerplexity(what: string, dir: string, vocabSize: number, T: number, texts: string[], hooks: RunHooks, measure: PerplexityFn): Promise<EvalResult> {
  const tok = loadTokenizer(dir);
  const out: Record<string, number> = {};
  const kl: Record<string, number> = {};
  for (const text of texts) {
    const key = textKey(text);
    const ids = tokenizeFile(tok, text, vocabSize).ids;
    hooks.onProgress({ kind: 'begin', title: `perplexity of ${what} on ${key} (ctx ${T})`, cancellable: true });
    const r = await measure(ids, {
      ctx: T,
      signal: hooks.signal,
      onProgress: (done, total) => hooks.onProgress({ kind: 'report', message: `${key}: ${done}/${total} windows`, percentage: Math.round((100 * done) / total) }),
    });
    const klText = r.kl === undefined ? '' : `, KL ${r.kl.toFixed(5)} nats/token`;
    hooks.onProgress({ kind: 'end', message: `${key}: perplexity ${r.ppl.toFixed(4)}${klText} (${r.windows} windows, ${r.seconds.toFixed(1)} s, ${r.ep})` });
    out[key] = r.ppl;
    if (r.kl !== undefined) kl[key] = r.kl;
  }
  return Object.keys(kl).length ? { perplexity: out, kl } : { perplexity: out };
}

/** Perplexities of a finished run's native output (loaded back from disk), and its KL from the run's float model. */
export function evaluateRunOutput(dir: RunDir, texts: string[], hooks: RunHooks, ep?: ExecutionProviderName): Promise<EvalResult> {
  return evaluate(dir.dir, texts, { ctx: 0, ep, klReference: '' }, hooks);
}
