// The model graphs on a GPU machine (WebGPU EP) against the CPU EP of the same machine: tiny's
// full-text perplexity on both texts, a base-shaped (synthetic weights) perplexity run for
// throughput, block/head timings, the ONNX export evaluated through the same runtime, and (with
// PLACEMENT=block|stats|head) ORT's verbose node placement. EPS=cpu THREADS=2 under `taskset -c 0,1`
// gives an idle 2-core reference (CI has 2 cores; the shared dev machine is too loaded to time). Prints a markdown section; the
// device returns it in $OUT and it is appended to bench/RESULTS.md by hand (the device cannot
// reach this checkout). Only tiny travels to the device (the tree limit is 64 MiB).
//
// Build here:  npx esbuild bench/ppl_webgpu.ts --bundle --platform=node --format=cjs \
//                --external:onnxruntime-node --outfile=.scratch/gpu/ppl_webgpu.cjs
// On the device (node and onnxruntime-node 1.30 from .gpu/, Vulkan loader from .gl/):
//   NODE_PATH=/tmp/o/node_modules /tmp/w/node .scratch/gpu/ppl_webgpu.cjs

import * as ort from 'onnxruntime-node';
import { ComputeRuntime, type EpName } from '../src/engine/compute/runtime';
import { allLinears, otherTensors, parseLlamaConfig } from '../src/engine/model/config';
import { LlamaForward } from '../src/engine/model/llama_forward';
import { blockTensorSuffixes, buildBlockGraph, buildHeadGraph } from '../src/engine/model/llama_graph';
import { cachedWeights, openModel } from '../src/engine/model/loader';
import { perplexity } from '../src/engine/model/perplexity';
import { tokenizeFile } from '../src/engine/model/tokenizer';
import { buildOnnxModel } from '../src/engine/run/export_onnx';
import { perplexityOnnx } from '../src/engine/run/export_onnx_eval';
import { writeFileSync } from 'node:fs';

/** /work/shared/fixtures/models/base/config.json (the weights are not needed: synthetic). */
const BASE = {
  model_type: 'llama',
  hidden_size: 512,
  intermediate_size: 1408,
  num_hidden_layers: 8,
  num_attention_heads: 8,
  num_key_value_heads: 4,
  head_dim: 64,
  vocab_size: 8192,
  rms_norm_eps: 1e-5,
  max_position_embeddings: 2048,
  tie_word_embeddings: true,
  rope_parameters: { rope_theta: 10000.0, rope_type: 'default' },
};

const lines: string[] = [];
const log = (s: string) => (console.log(s), lines.push(s));

async function placement(which: string): Promise<void> {
  ort.env.logLevel = 'verbose';
  const bc = parseLlamaConfig(BASE, 'base/config.json');
  const bytes = which === 'head' ? buildHeadGraph(bc, 'nll') : buildBlockGraph(bc, 512, which === 'stats' ? 'stats' : 'none');
  const s = await ort.InferenceSession.create(bytes, { executionProviders: ['webgpu'], logSeverityLevel: 0, logVerbosityLevel: 0 } as ort.InferenceSession.SessionOptions);
  await s.release();
}

async function main(): Promise<void> {
  if (process.env.PLACEMENT) return placement(process.env.PLACEMENT);
  const eps = (process.env.EPS ?? 'webgpu,cpu').split(',') as EpName[];
  const tiny = openModel('fixtures/tiny');
  const w = cachedWeights(tiny.weights);
  const base = parseLlamaConfig(BASE, 'base/config.json');
  const syn = new Map<string, Float32Array>();
  const shapes = new Map(otherTensors(base));
  for (const l of allLinears(base)) shapes.set(l.weight, [l.rows, l.cols]);
  let k = 1;
  for (const [n, sh] of shapes) {
    const len = sh.reduce((a, b) => a * b, 1),
      f = k++,
      v = new Float32Array(len);
    for (let i = 0; i < len; i++) v[i] = n.includes('norm') ? 1 : 0.03 * Math.sin(i * 0.7 + f);
    syn.set(n, v);
  }
  const synIds = new Int32Array(96 * 512).map((_, i) => (i * 7919) % 8192);
  log('| EP | measurement | result |');
  log('| --- | --- | --- |');
  for (const ep of eps) {
    const threads = process.env.THREADS ? Number(process.env.THREADS) : undefined;
    const rt = await ComputeRuntime.create({ ep, intraOpNumThreads: threads });
    for (const text of ['persuasion', 'jargon_tail']) {
      const { ids } = tokenizeFile(tiny.tokenizer(), `fixtures/text/${text}.txt`, tiny.cfg.vocabSize, null);
      const r = await perplexity(tiny.cfg, ids, w, { ctx: 256, rt });
      log(`| ${rt.ep} | tiny ${text} (ctx 256, ${r.windows} windows) | ppl ${r.ppl.toFixed(4)}, ${r.seconds.toFixed(2)} s, ${r.tokensPerSecond.toFixed(0)} tok/s |`);
    }
    for (const B of [8, 16]) {
      const r = await perplexity(base, synIds, (n) => syn.get(n)!, { ctx: 512, rt, batch: B });
      log(`| ${rt.ep} | base-shaped synthetic weights, 96 windows of 512, batch ${B} | ${r.seconds.toFixed(2)} s, ${r.tokensPerSecond.toFixed(0)} tok/s |`);
    }
    const fwd = new LlamaForward(base, 512, rt);
    const wts: Record<string, Float32Array> = {};
    for (const s of blockTensorSuffixes(base)) wts[s] = syn.get(`model.layers.0.${s}`)!;
    const x = new Float32Array(8 * 512 * 512).map((_, i) => Math.cos(i));
    for (const cap of ['none', 'stats'] as const) {
      await fwd.block(x, 8, wts, cap);
      const t0 = performance.now();
      for (let i = 0; i < 3; i++) await fwd.block(x, 8, wts, cap);
      log(`| ${rt.ep} | base block, batch 8×512, capture ${cap}, host in/out | ${((performance.now() - t0) / 3).toFixed(1)} ms |`);
    }
    const { bytes } = await buildOnnxModel({ cfg: tiny.cfg, weights: w, layers: () => undefined }, { maxPositions: 256 });
    writeFileSync('/tmp/lopro-tiny.onnx', bytes);
    const { ids } = tokenizeFile(tiny.tokenizer(), 'fixtures/text/persuasion.txt', tiny.cfg.vocabSize, null);
    const win = Array.from({ length: 64 }, (_, i) => i);
    const r = await perplexityOnnx('/tmp/lopro-tiny.onnx', ids, { ctx: 256, rt, windows: win });
    const e = await perplexity(tiny.cfg, ids, w, { ctx: 256, rt, windows: win });
    log(`| ${rt.ep} | ONNX export of float tiny, 64 windows | onnx ${r.ppl.toFixed(5)} vs engine ${e.ppl.toFixed(5)} |`);
    log(
      `| ${rt.ep} | host↔device traffic over the run | ${(rt.counters.h2dBytes / 1e9).toFixed(2)} GB in, ${(rt.counters.d2hBytes / 1e9).toFixed(2)} GB out, ${rt.counters.runs} runs |`,
    );
    await rt.dispose();
  }
  writeFileSync(process.env.OUT ? `${process.env.OUT}/ppl_webgpu.md` : '/tmp/ppl_webgpu.md', lines.join('\n') + '\n');
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
