// Prefill and decode speed of models side by side in one process (issue 18): each model continues the same
// prompt (the first P tokens of a text) for N tokens, greedy, end-of-sequence ignored; one warm-up, then R
// repeats taken in turn across the models; the table gives the medians. Models are anything `lopro generate` takes (a float folder, a run, an
// ONNX export); the ONNX size is the export's model.onnx where there is one, else the in-memory graph's bytes.
//   node --import tsx bench/generate_speed.ts [--ep cpu|webgpu|cuda] [--prompt-tokens 128] [--new-tokens 64]
//        [--repeats 3] [--text fixtures/text/persuasion.txt] [--json FILE] name=PATH [name=PATH ...]
import { writeFileSync } from 'node:fs';
import { hostname, cpus } from 'node:os';
import { getRuntime } from '../src/engine/compute/runtime';
import { tokenizeFile } from '../src/engine/model/tokenizer';
import { generate, openGenerationModel } from '../src/engine/run/generate';
import { takeOption } from './cli_args';

const args = process.argv.slice(2);
const opt = (name: string, dflt: string) => takeOption(args, name, dflt);
const ep = opt('ep', 'cpu') as 'cpu' | 'webgpu' | 'cuda';
const P = Number(opt('prompt-tokens', '128'));
const N = Number(opt('new-tokens', '64'));
const R = Number(opt('repeats', '3'));
const text = opt('text', 'fixtures/text/persuasion.txt');
const jsonOut = opt('json', '');
const models = args.map((a) => {
  const k = a.indexOf('=');
  if (k < 0) throw new Error(`model spec "${a}" is not name=PATH`);
  return { name: a.slice(0, k), path: a.slice(k + 1) };
});
if (!models.length) throw new Error('name at least one model: name=PATH');

const median = (v: number[]) => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)];

async function main() {
  const rt = await getRuntime(ep);
  // All models open at once and the repeats taken in turn (model 1, 2, 3, 1, 2, 3, …): what else runs on the machine
  // meanwhile weighs on every model alike.
  const opened = [];
  for (const { name, path } of models) {
    const t0 = performance.now();
    const m = await openGenerationModel(path, rt);
    const ids = tokenizeFile(m.tokenizer, text, m.cfg.vocabSize, null).ids.slice(0, P);
    await generate(m, ids, { maxTokens: 4, stopAtEos: false });
    opened.push({ name, path, m, ids, openSeconds: (performance.now() - t0) / 1000, runs: [] as Awaited<ReturnType<typeof generate>>[] });
  }
  for (let r = 0; r < R; r++) for (const o of opened) o.runs.push(await generate(o.m, o.ids, { maxTokens: N, stopAtEos: false }));
  const rows: Record<string, unknown>[] = [];
  for (const { name, path, m, runs, openSeconds } of opened) {
    const row = {
      name,
      path,
      source: m.source,
      promptTokens: P,
      newTokens: N,
      prefillTokPerS: median(runs.map((x) => x.prefillTokensPerSecond)),
      decodeTokPerS: median(runs.map((x) => x.decodeTokensPerSecond)),
      decodeMsPerToken: 1000 / median(runs.map((x) => x.decodeTokensPerSecond)),
      openSeconds,
      sameTokensAsFirst: rows.length ? JSON.stringify(runs[0].tokens.slice(0, 16)) === (rows[0].first16 as string) : true,
      first16: JSON.stringify(runs[0].tokens.slice(0, 16)),
    };
    rows.push(row);
    console.error(`${name}: prefill ${row.prefillTokPerS.toFixed(1)} tok/s, decode ${row.decodeTokPerS.toFixed(1)} tok/s (open ${openSeconds.toFixed(1)} s)`);
  }
  const base = rows[0].decodeTokPerS as number;
  console.log(`\n## generate_speed — ${new Date().toISOString()} — ${hostname()}, ${cpus().length} cores, EP ${rt.ep}`);
  console.log(`prompt ${P} tokens of ${text}, ${N} new tokens greedy (EOS ignored), median of ${R} after a warm-up\n`);
  console.log("| model | source | prefill tok/s | decode tok/s | ms/token | decode vs first row | first 16 tokens = first row's |");
  console.log('| --- | --- | ---: | ---: | ---: | ---: | --- |');
  for (const r of rows)
    console.log(
      `| ${r.name} | ${r.source} | ${(r.prefillTokPerS as number).toFixed(1)} | ${(r.decodeTokPerS as number).toFixed(1)} | ${(r.decodeMsPerToken as number).toFixed(2)} | ${((r.decodeTokPerS as number) / base).toFixed(3)} | ${r.sameTokensAsFirst ? 'yes' : 'no'} |`,
    );
  if (jsonOut) writeFileSync(jsonOut, JSON.stringify({ date: new Date().toISOString(), host: hostname(), ep: rt.ep, P, N, R, text, rows }, null, 2));
  await rt.dispose();
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
