// Decode speed of models compared step by step (issue 18): every model prefills the same prompt, then they decode in
// lockstep — one greedy step of each model in turn (the order rotated every step) — so that whatever else runs on
// the machine weighs on each step of every model alike. Per model: the median and the 10th percentile of its step
// times, and the median over steps of (first model's step time / this model's), i.e. its speed relative to the
// first model measured within the same instant. For a machine shared with other work, where medians of whole runs
// (bench/generate_speed.ts) drift by tens of percent between runs.
//   node --import tsx bench/decode_interleaved.ts [--ep cpu] [--prompt-tokens 128] [--steps 64] [--rounds 5]
//        [--text fixtures/text/persuasion.txt] [--json FILE] name=PATH [name=PATH ...]
import { writeFileSync } from 'node:fs';
import { cpus, hostname } from 'node:os';
import * as ort from 'onnxruntime-node';
import { getRuntime } from '../src/engine/compute/runtime';
import { argmax } from '../src/engine/model/sampling';
import { tokenizeFile } from '../src/engine/model/tokenizer';
import { emptyPast } from '../src/engine/run/export_onnx_eval';
import { openGenerationModel, type GenerationModel } from '../src/engine/run/generate';
import { takeOption } from './cli_args';

const args = process.argv.slice(2);
const opt = (name: string, dflt: string) => takeOption(args, name, dflt);
const ep = opt('ep', 'cpu') as 'cpu' | 'webgpu' | 'cuda';
const P = Number(opt('prompt-tokens', '128'));
const S = Number(opt('steps', '64'));
const R = Number(opt('rounds', '5'));
const text = opt('text', 'fixtures/text/persuasion.txt');
const jsonOut = opt('json', '');
const specs = args.map((a) => {
  const k = a.indexOf('=');
  if (k < 0) throw new Error(`model spec "${a}" is not name=PATH`);
  return { name: a.slice(0, k), path: a.slice(k + 1) };
});
if (!specs.length) throw new Error('name at least one model: name=PATH');

const i64 = (v: ArrayLike<number>, dims: number[]) => new ort.Tensor('int64', BigInt64Array.from(Array.from(v, BigInt)), dims);
const quantile = (v: number[], q: number) => [...v].sort((a, b) => a - b)[Math.min(v.length - 1, Math.floor(q * v.length))];

/** One model's decoding state: its cache, its next token, its position. */
class Decoder {
  past: Record<string, ort.Tensor> = {};
  next = 0;
  pos = 0;
  constructor(readonly m: GenerationModel) {}
  async step(input: ArrayLike<number>): Promise<void> {
    const T = input.length;
    const out = await this.m.rt.run(this.m.session, {
      input_ids: i64(input, [1, T]),
      attention_mask: i64(new Array(this.pos + T).fill(1), [1, this.pos + T]),
      position_ids: i64(
        Array.from({ length: T }, (_, i) => this.pos + i),
        [1, T],
      ),
      ...this.past,
    });
    this.m.rt.release(...Object.values(this.past));
    this.past = {};
    for (const [n, t] of Object.entries(out)) if (n.startsWith('present.')) this.past[n.replace('present.', 'past_key_values.')] = t;
    const V = this.m.cfg.vocabSize;
    this.next = argmax((out.logits.data as Float32Array).subarray((T - 1) * V, T * V));
    this.pos += T;
  }
  async prefill(ids: ArrayLike<number>): Promise<void> {
    this.past = emptyPast(this.m.session, 1);
    this.pos = 0;
    await this.step(ids);
  }
}

async function main() {
  const rt = await getRuntime(ep);
  const models = [];
  for (const { name, path } of specs) {
    const m = await openGenerationModel(path, rt);
    const ids = tokenizeFile(m.tokenizer, text, m.cfg.vocabSize, null).ids.slice(0, P);
    const d = new Decoder(m);
    await d.prefill(ids.slice(0, 8)); // warm-up
    for (let s = 0; s < 8; s++) await d.step([d.next]);
    models.push({ name, path, d, ids, steps: [] as number[] });
  }
  const ratios: number[][] = models.map(() => []);
  for (let r = 0; r < R; r++) {
    for (const o of models) await o.d.prefill(o.ids);
    for (let s = 0; s < S; s++) {
      const t = new Array<number>(models.length);
      for (let k = 0; k < models.length; k++) {
        const i = (k + s + r) % models.length;
        const o = models[i];
        const t0 = performance.now();
        await o.d.step([o.d.next]);
        t[i] = performance.now() - t0;
        o.steps.push(t[i]);
      }
      for (let i = 0; i < models.length; i++) ratios[i].push(t[0] / t[i]);
    }
  }
  console.log(`\n## decode_interleaved — ${new Date().toISOString()} — ${hostname()}, ${cpus().length} cores, EP ${rt.ep}`);
  console.log(`prompt ${P} tokens of ${text}, ${S} greedy steps × ${R} rounds, the models' steps interleaved\n`);
  console.log('| model | median ms/step | p10 ms/step | decode tok/s (median) | speed vs first row (median of per-step ratios) |');
  console.log('| --- | ---: | ---: | ---: | ---: |');
  const rows = models.map((o, i) => {
    const row = { name: o.name, path: o.path, medianMs: quantile(o.steps, 0.5), p10Ms: quantile(o.steps, 0.1), ratio: quantile(ratios[i], 0.5) };
    console.log(`| ${row.name} | ${row.medianMs.toFixed(3)} | ${row.p10Ms.toFixed(3)} | ${(1000 / row.medianMs).toFixed(1)} | ${row.ratio.toFixed(3)} |`);
    return row;
  });
  if (jsonOut) writeFileSync(jsonOut, JSON.stringify({ date: new Date().toISOString(), host: hostname(), ep: rt.ep, P, S, R, text, rows }, null, 2));
  await rt.dispose();
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
