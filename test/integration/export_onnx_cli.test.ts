// `lopro export --format onnx` and `lopro generate` end to end on a tiny 2-bit run: the default export (2-bit
// container, int8 activation blocks) and the exact one with 2-bit codes in the 4-bit container give the run's
// perplexity (within 0.5 % and 0.1 %), the 4-bit container is the larger file, the flags are refused for other formats,
// and `lopro generate` on the export and on the run continues a prompt with the same greedy tokens when the export is exact.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { runCli, SMALL, tmp, TINY, TRAIN, PERSUASION } from './helpers';

test('lopro export --format onnx [--four-bit-container --float-activations] and lopro generate on a tiny W2 run', () => {
  const root = tmp('onnx-cli');
  const run = join(root, 'run');
  const text = join(root, 'eval.txt');
  writeFileSync(text, readFileSync(PERSUASION, 'utf8').slice(0, 20000));
  const q = runCli(['quantize', TINY, '--calib', TRAIN, ...SMALL, '--bits', '2', '--rank', '4', '--out', run, '--eval', text]);
  assert.equal(q.code, 0, q.stderr);
  const runPpl = (JSON.parse(readFileSync(join(run, 'run.json'), 'utf8')) as { perplexity: Record<string, number> }).perplexity.eval;
  const ppl = (dir: string) => {
    const e = runCli(['eval', dir, '--text', text, '--ctx', '64', '--json', '--quiet']);
    assert.equal(e.code, 0, e.stderr);
    return (JSON.parse(e.stdout) as Record<string, number>).eval;
  };
  const plain = join(root, 'plain'),
    exact4 = join(root, 'exact4');
  assert.equal(runCli(['export', run, '--format', 'onnx', '--out', plain, '--quiet']).code, 0);
  const e4 = runCli(['export', run, '--format', 'onnx', '--out', exact4, '--four-bit-container', '--float-activations', '--quiet']);
  assert.equal(e4.code, 0, e4.stderr);
  assert.ok(statSync(join(exact4, 'model.onnx')).size > statSync(join(plain, 'model.onnx')).size, 'the 4-bit container holds twice the code bytes');
  const pPlain = ppl(plain),
    pExact = ppl(exact4);
  assert.ok(Math.abs(pExact / runPpl - 1) < 1e-3, `exact export ${pExact} vs run ${runPpl}`);
  assert.ok(Math.abs(pPlain / runPpl - 1) < 5e-3, `default export ${pPlain} vs run ${runPpl}`);

  const bad = runCli(['export', run, '--format', 'f16', '--out', join(root, 'f16'), '--four-bit-container']);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /apply to --format onnx only/);
  assert.ok(!existsSync(join(root, 'f16')), 'nothing written');

  const gen = (path: string) => {
    const g = runCli(['generate', path, '--prompt', 'The council agreed that', '--max-tokens', '12', '--json']);
    assert.equal(g.code, 0, g.stderr);
    return JSON.parse(g.stdout) as { tokens: number[]; text: string; source: string };
  };
  const fromExport = gen(exact4);
  assert.equal(fromExport.source, 'onnx export');
  assert.ok(fromExport.tokens.length >= 1 && fromExport.text.length > 0);
  const fromRun = gen(run);
  assert.equal(fromRun.source, 'native (quantized)');
  // The run's in-memory graph takes int8 activation blocks (the default), the exact export float ones: the first
  // token is the same unless two logits are within int8 rounding of each other.
  assert.equal(fromRun.tokens[0], fromExport.tokens[0]);
});
