// One shard of the model-level corpus per test file (each file stays under ~30 s on 2 cores; the
// runner runs two at a time). Each shard prints its own outcome line; the shard that finishes last
// in a test run (shards of one run share the runner's pid) adds the safetensors corpus's outcomes
// and prints the grand-total line the closing note quotes.

import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openCheckpoint } from '../../../src/engine/io/checkpoint';
import { ProtocolError } from '../../../src/protocol/rpc';
import { generateCorpus, writeCorpus } from '../io/hostile_corpus';
import { buildBase, generateModelCorpus, setCalib, writeCalib } from './model_corpus';
import { baseRun, runCase, type Baselines, type CaseOutcome } from './run_corpus';

/** Families of each shard (every family in exactly one shard: checked below). */
export const SHARDS: Record<string, readonly string[]> = {
  config: ['config'],
  qconfig: ['qconfig'],
  checkpoint: ['checkpoint', 'calibration'],
  weights: ['weights'],
  shapes: ['shapes'],
};

const fmt = (m: Map<string, number>) =>
  [...m]
    .sort()
    .map(([k, v]) => `${k}=${v}`)
    .join(' ');
const count = (xs: string[]) => xs.reduce((m, x) => m.set(x, (m.get(x) ?? 0) + 1), new Map<string, number>());

export async function runShard(shard: keyof typeof SHARDS & string): Promise<void> {
  const all = generateModelCorpus();
  const families = new Set(all.map((c) => c.family));
  const covered = Object.values(SHARDS).flat();
  assert.deepEqual([...families].sort(), [...covered].sort(), 'every family belongs to one shard');
  assert.equal(new Set(all.map((c) => c.id)).size, all.length, 'case ids are unique');
  const cases = all.filter((c) => SHARDS[shard].includes(c.family));

  const root = mkdtempSync(join(tmpdir(), `lopro-reliability-${shard}-`));
  try {
    setCalib(writeCalib(root));
    const base: Baselines = new Map();
    if (cases.some((c) => 'ok' in c.expect && c.expect.ok === 'same')) base.set('gptq', await baseRun(root, buildBase, 'gptq'));
    const outcomes: CaseOutcome[] = [];
    for (const c of cases) outcomes.push(await runCase(c, root, base));
    const slowest = outcomes.reduce((a, o) => (o.ms > a.ms ? o : a));
    console.log(`model corpus [${shard}]: ${cases.length} cases; ${fmt(count(outcomes.map((o) => o.outcome)))}; slowest ${slowest.id} ${slowest.ms.toFixed(0)} ms`);
    const evaluated = outcomes.filter((o) => o.evalOutcome !== undefined);
    if (evaluated.length) console.log(`  lopro eval on the same ${evaluated.length} unquantized folders: ${fmt(count(evaluated.map((o) => o.evalOutcome!)))}`);
    for (const o of outcomes.filter((x) => x.outcome === 'KNOWN_GAP' || x.evalOutcome === 'KNOWN_GAP')) console.log(`  KNOWN_GAP ${o.id}: ${o.line}`);
    const failures = outcomes.filter((o) => o.failure);
    reportGrandTotal(shard, outcomes);
    assert.equal(failures.length, 0, `${failures.length} case(s) misbehaved:\n${failures.map((f) => `  ${f.id} → ${f.outcome}: ${f.failure}`).join('\n')}`);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
}

/** Outcome counts of the safetensors corpus (test/unit/io/hostile.test.ts checks each against its reference). */
export function safetensorsOutcomes(): Map<string, number> {
  const dir = mkdtempSync(join(tmpdir(), 'lopro-reliability-st-'));
  try {
    const corpus = generateCorpus();
    const targets = writeCorpus(dir, corpus);
    return count(
      targets.map((t) => {
        try {
          openCheckpoint(t).close();
          return 'ok';
        } catch (e) {
          return e instanceof ProtocolError ? e.code : 'CRASH';
        }
      }),
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function reportGrandTotal(shard: string, outcomes: CaseOutcome[]): void {
  // Shards of one `node --test` run are children of the same runner process.
  const key = join(tmpdir(), `lopro-reliability-run-${process.ppid}`);
  writeFileSync(`${key}-${shard}.json`, JSON.stringify(outcomes.map((o) => [o.outcome, o.failure ? 1 : 0, o.evalOutcome ?? ''])));
  const files = Object.keys(SHARDS).map((s) => `${key}-${s}.json`);
  if (!files.every((f) => existsSync(f))) return;
  const rows = files.flatMap((f) => JSON.parse(readFileSync(f, 'utf8')) as [string, number, string][]);
  const evals = count(rows.map((r) => r[2]).filter((x) => x !== ''));
  for (const f of files) rmSync(f, { force: true });
  const model = count(rows.map((r) => r[0]));
  const st = safetensorsOutcomes();
  const nSt = [...st.values()].reduce((a, b) => a + b, 0);
  const total = new Map(model);
  for (const [k, v] of st) total.set(k, (total.get(k) ?? 0) + v);
  const failed = rows.reduce((a, r) => a + r[1], 0);
  console.log(
    `RELIABILITY CORPUS: ${nSt + rows.length} hostile inputs = ${nSt} safetensors + ${rows.length} model-level; ` +
      `all outcomes: ${fmt(total)}; model-level: ${fmt(model)}; safetensors: ${fmt(st)}; ` +
      `plus lopro eval on ${[...evals.values()].reduce((a, b) => a + b, 0)} of the model folders: ${fmt(evals)}; misbehaving: ${failed}`,
  );
}
