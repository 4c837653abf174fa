// Streaming text out of a generation: the cost of decoding the whole continuation at every token (what
// `lopro generate` did before IncrementalDetokenizer) against the incremental window, for continuations of
// N tokens of a real text, side by side in one process. Prints a table (ms in all, µs per token).
//   node --import tsx bench/detokenize_cost.ts [--model fixtures/tiny] [--text fixtures/text/persuasion.txt]
import { readFileSync } from 'node:fs';
import { IncrementalDetokenizer } from '../src/engine/model/detokenize';
import { loadTokenizer } from '../src/engine/model/tokenizer';
import { takeOption } from './cli_args';

const args = process.argv.slice(2);
const tok = loadTokenizer(takeOption(args, 'model', 'fixtures/tiny'));
const all = [...tok.encode(readFileSync(takeOption(args, 'text', 'fixtures/text/persuasion.txt'), 'utf8').slice(0, 200_000))];

function wholePerToken(ids: number[]): string {
  let text = '';
  for (let k = 1; k <= ids.length; k++) {
    const s = tok.decode(ids.slice(0, k));
    const whole = s.endsWith('\uFFFD') ? s.slice(0, -1) : s;
    if (whole.length > text.length && whole.startsWith(text)) text = whole;
  }
  return text;
}

function incremental(ids: number[]): string {
  const d = new IncrementalDetokenizer((t) => tok.decode(t));
  let text = '';
  for (let k = 1; k <= ids.length; k++) text += d.next(ids.slice(0, k));
  return text + d.flush(ids);
}

const time = (f: () => string): [number, string] => {
  const t0 = performance.now();
  const s = f();
  return [performance.now() - t0, s];
};

console.log('| tokens | whole decode per token, ms | incremental, ms | µs/token whole | µs/token incremental | same text |');
console.log('| ---: | ---: | ---: | ---: | ---: | --- |');
for (const n of [64, 256, 1024, 4096]) {
  const ids = all.slice(1000, 1000 + n);
  const [a, ta] = time(() => wholePerToken(ids));
  const [b, tb] = time(() => incremental(ids));
  console.log(`| ${n} | ${a.toFixed(1)} | ${b.toFixed(1)} | ${((1000 * a) / n).toFixed(1)} | ${((1000 * b) / n).toFixed(1)} | ${ta === tb} |`);
}
