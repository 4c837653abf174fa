// `lopro demo` (npm run demo): the README's main job on the embedded tiny model — LoPRo W2 with
// calibration on fixtures/text/train.txt, a per-layer table (bits, bpw, proxy loss next to GPTQ's
// and RTN's on the same Hessian), then the perplexity of the EXPORTED model (the native output
// loaded back from disk) on the two held-out texts next to the float model's.
// Protocol settings throughout: 128 calibration windows of 256 tokens (tiny's protocol ctx), group
// 128 asymmetric, damping 0.01; --samples N trades accuracy for time.
// The float perplexities are computed once and cached (LOPRO_CACHE_DIR, default <tmp>/lopro-cache).

import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { atomicWriteFile } from '../io/atomic';
import { defaultCacheDir } from '../model/tokenizer';
import { hashModel } from './fingerprint';
import { ENGINE_VERSION } from './version';
import { dirname, join, resolve } from 'node:path';
import { DEFAULT_CONFIG, type QuantizeConfig } from '../../protocol/config';
import { evalPath } from './evaluate';
import { quantizeRun } from './pipeline';
import type { RunHooks } from './run_context';
import { formatLayerTable, table } from './report';

/** The repository root: the folder above us that holds fixtures/tiny (works from src/ and dist/). */
export function packageRoot(from = __dirname): string {
  let d = resolve(from);
  for (let i = 0; i < 6; i++) {
    if (existsSync(join(d, 'fixtures', 'tiny', 'config.json'))) return d;
    d = dirname(d);
  }
  return process.cwd();
}

/**
 * Float perplexities of the embedded model, cached on disk (they never change for a given model,
 * text, ctx and engine version): the demo then spends its time on the quantized model only.
 */
async function floatPerplexity(model: string, texts: string[], ep: QuantizeConfig['ep'], hooks: RunHooks): Promise<Record<string, number>> {
  const key = createHash('sha256')
    .update([hashModel(model), ...texts.map((t) => createHash('sha256').update(readFileSync(t)).digest('hex')), '256', ENGINE_VERSION].join('|'))
    .digest('hex')
    .slice(0, 24);
  const file = join(defaultCacheDir(), `ppl-float-${key}.json`);
  try {
    return JSON.parse(readFileSync(file, 'utf8')) as Record<string, number>;
  } catch {
    const fp = await evalPath(model, texts, { ctx: 256, ep }, hooks);
    try {
      mkdirSync(defaultCacheDir(), { recursive: true });
      atomicWriteFile(file, JSON.stringify(fp));
    } catch {
      // a read-only cache only costs time
    }
    return fp;
  }
}

export interface DemoOptions {
  out: string;
  samples: number;
  method: QuantizeConfig['method'];
  bits: number;
  ep: QuantizeConfig['ep'];
}

export async function runDemo(o: DemoOptions, hooks: RunHooks, print: (s: string) => void): Promise<void> {
  const root = packageRoot();
  const model = join(root, 'fixtures', 'tiny');
  const texts = ['persuasion.txt', 'jargon_tail.txt'].map((t) => join(root, 'fixtures', 'text', t));
  const config: QuantizeConfig = {
    ...DEFAULT_CONFIG,
    method: o.method,
    bits: o.bits,
    calibText: join(root, 'fixtures', 'text', 'train.txt'),
    calibSamples: o.samples,
    ctx: 256,
    ep: o.ep,
    compare: true,
    layerOverrides: {},
  };
  const t0 = Date.now();
  const summary = await quantizeRun({ modelPath: model, config, runDir: o.out, resume: false, evalTexts: texts }, hooks);
  const tq = (Date.now() - t0) / 1000;
  const fp = await floatPerplexity(model, texts, o.ep, hooks);
  print('');
  print(`LoPRo demo: fixtures/tiny, ${o.method} W${o.bits}, ${o.samples} calibration windows × 256 tokens of train.txt, EP ${summary.ep}, backend ${summary.backend}`);
  print(formatLayerTable({ ...summary, perplexity: undefined }));
  print('');
  print('Perplexity (protocol windows of 256 tokens), quantized model as exported (native, loaded back):');
  const rows = Object.keys(fp).map((k) => {
    const q = summary.perplexity?.[k] ?? NaN;
    return [k, fp[k].toFixed(3), q.toFixed(3), `${(100 * (q / fp[k] - 1)).toFixed(2)}%`];
  });
  print(table(['text', 'float', `${o.method} W${o.bits} (${summary.bpw.toFixed(2)} bpw)`, 'increase'], rows));
  print(`run directory: ${summary.runDir} (quantize + eval ${tq.toFixed(0)} s, total ${((Date.now() - t0) / 1000).toFixed(0)} s)`);
}
