// Float perplexity of the fixture models on both held-out texts, per ../shared/protocol.md, against
// the PyTorch float32 numbers printed there (acceptance: within 0.2 %). Prints a table and appends
// a dated entry to bench/RESULTS.md (under flock).
//
//   node --import tsx bench/ppl_float.ts [--models tiny,small,base] [--texts persuasion,jargon_tail]
//        [--ep cpu|auto|cuda|webgpu] [--batch N] [--no-append]
//
// Models are read from /work/shared/fixtures/models/<name> (or $LOPRO_MODELS/<name>); `tiny` falls
// back to fixtures/tiny. ctx: tiny 256, small and base 512 (the protocol's table).

import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ComputeRuntime, type EpChoice } from '../src/engine/compute/runtime';
import { cachedWeights, openModel } from '../src/engine/model/loader';
import { perplexity } from '../src/engine/model/perplexity';
import { tokenizeFile } from '../src/engine/model/tokenizer';

/** PyTorch float32 perplexities from ../shared/protocol.md. */
const REFERENCE: Record<string, { ctx: number; persuasion: number; jargon_tail: number }> = {
  tiny: { ctx: 256, persuasion: 56.69, jargon_tail: 68.13 },
  small: { ctx: 512, persuasion: 70.68, jargon_tail: 111.79 },
  base: { ctx: 512, persuasion: 38.61, jargon_tail: 47.83 },
};

function arg(args: string[], name: string, fallback: string): string {
  const i = args.indexOf(name);
  return i >= 0 && i + 1 < args.length ? args[i + 1] : fallback;
}

function modelDir(name: string): string {
  const root = process.env.LOPRO_MODELS ?? '/work/shared/fixtures/models';
  const d = path.join(root, name);
  if (existsSync(path.join(d, 'config.json'))) return d;
  if (name === 'tiny') return path.join(__dirname, '..', 'fixtures', 'tiny');
  throw new Error(`model ${name} not found under ${root}`);
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const models = arg(args, '--models', 'tiny,small,base').split(',');
  const texts = arg(args, '--texts', 'persuasion,jargon_tail').split(',') as ('persuasion' | 'jargon_tail')[];
  const ep = arg(args, '--ep', 'cpu') as EpChoice;
  const batch = args.includes('--batch') ? Number(arg(args, '--batch', '0')) : undefined;
  const load0 = os.loadavg();
  const rt = await ComputeRuntime.create({ ep });
  const rows: string[][] = [];
  for (const name of models) {
    const ref = REFERENCE[name];
    if (!ref) throw new Error(`no reference for model ${name}`);
    const m = openModel(modelDir(name));
    const weights = cachedWeights(m.weights);
    for (const text of texts) {
      const tf = path.join(__dirname, '..', 'fixtures', 'text', `${text}.txt`);
      const tk = tokenizeFile(m.tokenizer(), tf, m.cfg.vocabSize, null); // timed: no cache
      const r = await perplexity(m.cfg, tk.ids, weights, { ctx: ref.ctx, rt, batch });
      const want = ref[text];
      const diff = (100 * (r.ppl - want)) / want;
      const row = [
        name,
        text,
        String(ref.ctx),
        String(r.windows),
        r.ppl.toFixed(4),
        want.toFixed(2),
        `${diff >= 0 ? '+' : ''}${diff.toFixed(3)} %`,
        Math.abs(diff) < 0.2 ? 'yes' : 'NO',
        r.tokensPerSecond.toFixed(0),
        r.seconds.toFixed(1),
        tk.seconds.toFixed(2),
        r.ep,
      ];
      rows.push(row);
      console.log(row.join('  '));
    }
    m.close();
  }
  // Tokenizer speed on the calibration text (the issue asks: seconds, not minutes).
  const tm = openModel(modelDir(models.includes('base') ? 'base' : models[0]));
  const train = tokenizeFile(tm.tokenizer(), path.join(__dirname, '..', 'fixtures', 'text', 'train.txt'), tm.cfg.vocabSize, null);
  tm.close();
  await rt.dispose();
  const header = ['model', 'text', 'ctx', 'windows', 'ppl', 'PyTorch', 'diff', '< 0.2 %', 'tokens/s', 'eval s', 'tokenize s', 'EP'];
  const line = (c: string[]) => `| ${c.join(' | ')} |`;
  const table = [line(header), line(header.map(() => '---')), ...rows.map(line)].join('\n');
  const load1 = os.loadavg();
  const cpu = os.cpus();
  const summary = [
    `train.txt: ${train.ids.length} tokens in ${train.seconds.toFixed(2)} s (@huggingface/tokenizers 0.2.0, ${path.basename(tm.dir)} tokenizer, whole file as one string).`,
    `Load average before/after: ${load0.map((x) => x.toFixed(2)).join(' ')} / ${load1.map((x) => x.toFixed(2)).join(' ')} (shared machine: tokens/s varies with other processes).`,
  ];
  console.log('\n' + table + '\n\n' + summary.join('\n'));
  if (!args.includes('--no-append')) {
    const entry = [
      '',
      `## ppl_float — ${new Date().toISOString().replace(/\.\d+Z$/, 'Z')}`,
      '',
      `Machine: ${os.hostname()} (${os.platform()} ${os.arch()}, ${cpu.length}× ${cpu[0]?.model}, ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB), EP: ${rt.ep}, Node ${process.version}.`,
      `Command: \`node --import tsx bench/ppl_float.ts ${args.join(' ')}\`. Protocol: non-overlapping windows, NLL over ctx − 1 positions, float32 ONNX graphs (one per block).`,
      '',
      table,
      '',
      ...summary.map((s) => `- ${s}`),
      '',
    ].join('\n');
    const file = path.join(__dirname, 'RESULTS.md');
    execFileSync('flock', ['/tmp/lopro-results.lock', 'sh', '-c', 'cat >> "$1"', 'sh', file], { input: entry });
    console.log(`appended to ${file}`);
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
