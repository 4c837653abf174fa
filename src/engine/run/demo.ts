// `lopro demo` (npm run demo): the README's main job on the embedded tiny model — a size target (2.25 bits per
// weight unless told otherwise) reached twice with calibration on fixtures/text/train.txt: by GPTQ (clip mse) and
// by LoPRo (clip mse), each with its measured per-layer plan; LoPRo's per-layer table (method, bits, rank, bpw,
// proxy loss next to GPTQ's and RTN's on the same Hessian), then the perplexity and KL of the EXPORTED models (the
// native output loaded back from disk) on the two held-out texts, side by side with the float model's.
// --target-bpw 0 quantizes every layer at --bits instead (one run of --method).
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
import type { RunSummary } from '../../protocol/messages';
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
  /** 0: one uniform run of `method` at `bits`. */
  targetBpw: number;
  clip: QuantizeConfig['clip'];
  ep: QuantizeConfig['ep'];
}

export async function runDemo(o: DemoOptions, hooks: RunHooks, print: (s: string) => void): Promise<void> {
  const root = packageRoot();
  const model = join(root, 'fixtures', 'tiny');
  const texts = ['persuasion.txt', 'jargon_tail.txt'].map((t) => join(root, 'fixtures', 'text', t));
  const base: QuantizeConfig = {
    ...DEFAULT_CONFIG,
    method: o.method,
    bits: o.bits,
    clip: o.clip,
    targetBpw: o.targetBpw,
    calibText: join(root, 'fixtures', 'text', 'train.txt'),
    calibSamples: o.samples,
    ctx: 256,
    ep: o.ep,
    compare: true,
    layerOverrides: {},
  };
  // At a target, GPTQ reaches it too (its own plan over 2/3/4 bits): the two are compared at the same size.
  const runs: { label: string; config: QuantizeConfig; out: string }[] =
    o.targetBpw > 0
      ? [
          { label: `gptq${o.clip === 'mse' ? ' mse' : ''}`, config: { ...base, method: 'gptq', compare: false }, out: join(o.out, 'gptq') },
          { label: `${o.method}${o.clip === 'mse' ? ' mse' : ''}`, config: base, out: join(o.out, o.method) },
        ]
      : [{ label: `${o.method} W${o.bits}`, config: base, out: o.out }];
  const t0 = Date.now();
  const summaries: RunSummary[] = [];
  for (const r of runs) summaries.push(await quantizeRun({ modelPath: model, config: r.config, runDir: r.out, resume: false, evalTexts: texts }, hooks));
  const tq = (Date.now() - t0) / 1000;
  const fp = await floatPerplexity(model, texts, o.ep, hooks);
  const last = summaries[summaries.length - 1];
  print('');
  const what = o.targetBpw > 0 ? `target ${o.targetBpw} bits per weight (${runs.map((r) => r.label).join(' and ')}, each with its measured plan)` : `${o.method} W${o.bits}`;
  print(`LoPRo demo: fixtures/tiny, ${what}, ${o.samples} calibration windows × 256 tokens of train.txt, EP ${last.ep}, backend ${last.backend}`);
  print(formatLayerTable({ ...last, perplexity: undefined }));
  print('');
  print('Perplexity and KL from the float model (protocol windows of 256 tokens), quantized models as exported (native, loaded back):');
  const rows = Object.keys(fp).map((k) => [
    k,
    fp[k].toFixed(3),
    ...summaries.flatMap((s) => {
      const q = s.perplexity?.[k] ?? Number.NaN;
      return [`${q.toFixed(3)} (${q >= fp[k] ? '+' : ''}${(100 * (q / fp[k] - 1)).toFixed(2)}%)`, (s.kl?.[k] ?? Number.NaN).toFixed(4)];
    }),
  ]);
  print(table(['text', 'float', ...summaries.flatMap((s, i) => [`${runs[i].label} (${s.bpw.toFixed(3)} bpw)`, 'KL'])], rows));
  print(`run directories: ${summaries.map((s) => s.runDir).join(', ')} (quantize + eval ${tq.toFixed(0)} s, total ${((Date.now() - t0) / 1000).toFixed(0)} s)`);
}
