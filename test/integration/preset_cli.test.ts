// `lopro quantize --preset authors` end to end on the embedded tiny model: the preset's settings reach the run (its
// config in run.json, each LoPRo layer's chosen rank and refinement in its notes), a flag given next to it wins, and an
// unknown preset is refused by name with nothing written.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { PRESETS, type QuantizeConfig } from '../../src/protocol/config';
import type { LayerReport } from '../../src/protocol/messages';
import { runCli, SMALL, tmp, TINY, TRAIN } from './helpers';

test("--preset authors: the authors' settings in the run, a flag given beside it wins; an unknown preset is refused (exit 2)", () => {
  const root = tmp('preset');
  const run = join(root, 'a');
  const q = runCli(['quantize', TINY, '--calib', TRAIN, ...SMALL, '--preset', 'authors', '--group-size', '64', '--out', run]);
  assert.equal(q.code, 0, q.stderr);
  const m = JSON.parse(readFileSync(join(run, 'run.json'), 'utf8')) as { config: QuantizeConfig; layers: LayerReport[] };
  for (const [k, v] of Object.entries(PRESETS.authors)) assert.equal((m.config as unknown as Record<string, unknown>)[k], v, k);
  assert.equal(m.config.groupSize, 64, 'the flag beside the preset wins');
  const notes = m.layers.flatMap((l) => l.notes);
  assert.equal(notes.filter((n) => n.startsWith('rank chosen:')).length, 28, 'every layer chose its rank');
  const withRank = m.layers.filter((l) => l.notes.some((n) => /^rank chosen: [1-9]/.test(n)));
  for (const l of withRank) {
    assert.ok(
      l.notes.some((n) => n.startsWith('refinement:')),
      `${l.name}: ${l.notes.join(' | ')}`,
    );
    assert.equal(l.config.rank, Number(l.notes.find((n) => n.startsWith('rank chosen:'))!.match(/\d+/)![0]));
  }

  const bad = runCli(['quantize', TINY, '--calib', TRAIN, '--preset', 'theirs', '--out', join(root, 'b')]);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /--preset must be none or authors, got "theirs"/);
  assert.ok(!existsSync(join(root, 'b')), 'nothing written');
});
