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
import { checkModelTensors, loadModelConfig } from '../model/config';
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
}

/** Result key of a text file: its base name without extension (persuasion.txt → persuasion). */
export const textKey = (file: string) => basename(file).replace(/\.[^.]*$/, '');

export async function evalPath(path: string, texts: string[], opts: EvalOptions, hooks: RunHooks): Promise<Record<string, number>> {
  let dir = resolve(path);
  let ctx = opts.ctx;
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
    dir = join(dir, 'native');
  }
  if (!existsSync(join(dir, 'config.json')))
    throw new ProtocolError(ErrorCode.BadConfig, `${dir} has no config.json`, dir, 'pass a run directory, an export folder or a Hugging Face model folder');
  const cfg = loadModelConfig(dir);
  const T = protocolCtx(cfg.maxPositions, ctx);
  const rt = await getRuntime(opts.ep ?? 'auto');
  const onnx = join(dir, 'model.onnx');
  if (existsSync(onnx)) {
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
    return await perTextPerplexity(dir, dir, cfg.vocabSize, T, texts, hooks, (ids, o) => perplexity(cfg, ids, (name) => weights.readFloat32(name), { ...o, rt }));
  } finally {
    weights.close();
  }
}

type PerplexityFn = (ids: Int32Array, o: { ctx: number; signal?: AbortSignal; onProgress: (done: number, total: number) => void }) => Promise<PerplexityResult>;

/** Tokenizes each text with the folder's tokenizer and measures it, with begin/report/end progress. */
async function perTextPerplexity(
  what: string,
  dir: string,
  vocabSize: number,
  T: number,
  texts: string[],
  hooks: RunHooks,
  measure: PerplexityFn,
): Promise<Record<string, number>> {
  const tok = loadTokenizer(dir);
  const out: Record<string, number> = {};
  for (const text of texts) {
    const key = textKey(text);
    const ids = tokenizeFile(tok, text, vocabSize).ids;
    hooks.onProgress({ kind: 'begin', title: `perplexity of ${what} on ${key} (ctx ${T})`, cancellable: true });
    const r = await measure(ids, {
      ctx: T,
      signal: hooks.signal,
      onProgress: (done, total) => hooks.onProgress({ kind: 'report', message: `${key}: ${done}/${total} windows`, percentage: Math.round((100 * done) / total) }),
    });
    hooks.onProgress({ kind: 'end', message: `${key}: perplexity ${r.ppl.toFixed(4)} (${r.windows} windows, ${r.seconds.toFixed(1)} s, ${r.ep})` });
    out[key] = r.ppl;
  }
  return out;
}

/** Perplexities of a finished run's native output (loaded back from disk). */
export function evaluateRunOutput(dir: RunDir, texts: string[], hooks: RunHooks, ep?: ExecutionProviderName): Promise<Record<string, number>> {
  return evalPath(dir.dir, texts, { ctx: 0, ep }, hooks);
}
