// The model-level hostile corpus through the real CLI (a sample: one case per error family, plus
// the odd-width model that must quantize): a user error is ONE line on stderr,
// `lopro: <CODE>: … <file/tensor/flag> …`, exit code 2, no stack trace; a valid input exits 0.
// The whole corpus runs in process in test/unit/reliability/ (same cases, same expectations).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { kebab } from '../../src/engine/run/args';
import type { RunSummary } from '../../src/protocol/messages';
import { CORPUS_CONFIG, generateModelCorpus, setCalib, writeCalib, type ModelCase } from '../unit/reliability/model_corpus';
import { runCli, tmp } from './helpers';

const SAMPLE = [
  'config/hidden-string',
  'config/layers-billion',
  'config/rope-theta-both-places-differ',
  'checkpoint/sharded-missing-shard-file',
  'checkpoint/k-proj-transposed',
  'weights/NaN-q_proj-0-lopro',
  'calibration/empty',
  'calibration/ids-beyond-vocab',
  'calibration/tokenizer-missing',
  'qconfig/bH-100',
  'qconfig/rank-negative',
  'qconfig/group-0',
  'shapes/hidden200-mlp520-lopro',
];

/** QuantizeConfig fields → CLI flags (`--group-size 0`); the CLI names the flag, not the field. */
function flags(config: Record<string, unknown>): string[] {
  return Object.entries(config).flatMap(([k, v]) => [`--${kebab(k)}`, String(v)]);
}

test('corpus sample through `lopro quantize`: one-line named errors, exit 2, no stack; odd widths quantize', { timeout: 300_000 }, () => {
  const root = tmp('reliability-cli');
  try {
    setCalib(writeCalib(root));
    const all = new Map(generateModelCorpus().map((c) => [c.id, c] as [string, ModelCase]));
    for (const id of SAMPLE) {
      const c = all.get(id);
      assert.ok(c, `no corpus case ${id}`);
      const dir = join(root, id.replace('/', '__'));
      mkdirSync(dir, { recursive: true });
      const b = c.build(dir);
      const config = { ...CORPUS_CONFIG, ...b.config };
      const r = runCli(['quantize', b.model, '--calib', b.calib, '--out', join(dir, 'run'), '--quiet', '--json', ...flags(config)]);
      assert.doesNotMatch(r.stderr, /\n\s+at /, `${id}: stack trace on stderr:\n${r.stderr}`);
      if ('ok' in c.expect) {
        assert.equal(r.code, 0, `${id}: ${r.stderr}`);
        const s = JSON.parse(r.stdout) as RunSummary;
        const q = s.layers.find((l) => l.name === 'model.layers.0.self_attn.q_proj');
        // hidden 200 = b_I 128 + 72 rotated columns: no 128 block fits, b_H 8 does (and is reported).
        assert.equal(q?.hadamardBlockUsed, 8, `${id}: ${JSON.stringify(q?.notes)}`);
        continue;
      }
      assert.equal(r.code, 2, `${id}: exit code ${r.code}, stderr:\n${r.stderr}`);
      const lines = r.stderr.trim().split('\n');
      assert.equal(lines.length, 1, `${id}: more than one line on stderr:\n${r.stderr}`);
      assert.match(lines[0], new RegExp(`^lopro: ${c.expect.code}: `), id);
      const names = c.family === 'qconfig' ? Object.keys(b.config ?? {}).map((k) => `--${kebab(k)}`) : c.expect.names(dir);
      for (const n of names) assert.ok(lines[0].includes(n), `${id}: error does not name ${n}: ${lines[0]}`);
    }
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test('`lopro eval` and `lopro inspect` on hostile model folders: the same one-line named errors', { timeout: 180_000 }, () => {
  const root = tmp('reliability-cli-eval');
  try {
    const calib = writeCalib(root);
    setCalib(calib);
    const all = new Map(generateModelCorpus().map((c) => [c.id, c] as [string, ModelCase]));
    const runs: [string, string[], string, string][] = [
      // A wrong-sized linear used to reach ONNX Runtime (exit 1, "internal error") in eval.
      ['checkpoint/down-proj-one-col-more', ['eval', '--text', calib, '--ctx', '32', '--ep', 'cpu'], 'E_SHAPE_MISMATCH', 'model.layers.1.mlp.down_proj.weight'],
      ['weights/inf-final-norm', ['eval', '--text', calib, '--ctx', '32', '--ep', 'cpu'], 'E_NON_FINITE', 'model.norm.weight'],
      ['config/hidden-string', ['inspect'], 'E_BAD_CONFIG', 'hidden_size'],
      ['checkpoint/sharded-missing-shard-file', ['inspect'], 'E_BAD_CHECKPOINT', 'model-00002-of-00003.safetensors'],
    ];
    for (const [id, args, code, name] of runs) {
      const dir = join(root, id.replace('/', '__'));
      mkdirSync(dir, { recursive: true });
      const b = all.get(id)!.build(dir);
      const r = runCli([args[0], b.model, ...args.slice(1), '--quiet']);
      assert.equal(r.code, 2, `${id}: exit ${r.code}\n${r.stderr}`);
      const lines = r.stderr.trim().split('\n');
      assert.equal(lines.length, 1, `${id}: ${r.stderr}`);
      assert.match(lines[0], new RegExp(`^lopro: ${code}: .*${name.replace(/\./g, '\\.')}`), id);
    }
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});
