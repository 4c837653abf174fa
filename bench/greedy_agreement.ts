// How long a quantized model's greedy continuation stays the float model's (issue 18): K prompts of P tokens taken
// from a text at evenly spaced places, N greedy tokens each from the float model and from every other model; per
// model the number of leading tokens equal to the float's (median, min, max over the prompts) and the share of
// prompts whose first token agrees.
//   node --import tsx bench/greedy_agreement.ts [--prompts 10] [--prompt-tokens 64] [--new-tokens 32]
//        [--text fixtures/text/persuasion.txt] float=DIR name=PATH [name=PATH ...]
import { getRuntime } from '../src/engine/compute/runtime';
import { tokenizeFile } from '../src/engine/model/tokenizer';
import { generate, openGenerationModel } from '../src/engine/run/generate';
import { takeOption } from './cli_args';

const args = process.argv.slice(2);
const opt = (name: string, dflt: string) => takeOption(args, name, dflt);
const K = Number(opt('prompts', '10'));
const P = Number(opt('prompt-tokens', '64'));
const N = Number(opt('new-tokens', '32'));
const text = opt('text', 'fixtures/text/persuasion.txt');
const models = args.map((a) => ({ name: a.slice(0, a.indexOf('=')), path: a.slice(a.indexOf('=') + 1) }));

async function continuations(path: string, prompts: Int32Array[]): Promise<number[][]> {
  const rt = await getRuntime('cpu');
  const m = await openGenerationModel(path, rt);
  const out: number[][] = [];
  for (const p of prompts) out.push((await generate(m, p, { maxTokens: N, stopAtEos: false })).tokens);
  return out;
}

async function main() {
  const rt = await getRuntime('cpu');
  const first = await openGenerationModel(models[0].path, rt);
  const ids = tokenizeFile(first.tokenizer, text, first.cfg.vocabSize, null).ids;
  const step = Math.floor((ids.length - P) / K);
  const prompts = Array.from({ length: K }, (_, k) => ids.slice(k * step, k * step + P));
  const ref = await continuations(models[0].path, prompts);
  console.log(`\n## greedy_agreement — ${new Date().toISOString()} — ${K} prompts of ${P} tokens from ${text}, ${N} greedy tokens, CPU EP\n`);
  console.log(`| model | leading tokens equal to ${models[0].name}'s: median | min | max | first token equal |`);
  console.log('| --- | ---: | ---: | ---: | ---: |');
  for (const { name, path } of models.slice(1)) {
    const got = await continuations(path, prompts);
    const lens = got.map((g, k) => {
      let n = 0;
      while (n < N && g[n] === ref[k][n]) n++;
      return n;
    });
    const sorted = [...lens].sort((a, b) => a - b);
    console.log(`| ${name} | ${sorted[Math.floor(K / 2)]} | ${sorted[0]} | ${sorted[K - 1]} | ${lens.filter((n) => n > 0).length}/${K} |`);
  }
}
main().catch((e) => {
  console.error(e);
  process.exit(1);
});
