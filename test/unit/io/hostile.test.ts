// Runs the hostile corpus: every input must give a ProtocolError naming the file (and the tensor,
// where one is involved) or a correct result. The oracle is an independent reference validator
// and decoder written from the format description: the reader must accept exactly what the
// reference accepts, and then return byte-identical tensors.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { openCheckpoint } from '../../../src/engine/io/checkpoint';
import { isFloatDtype } from '../../../src/engine/io/safetensors';
import { ProtocolError } from '../../../src/protocol/rpc';
import { generateCorpus, writeCorpus, type HostileCase } from './hostile_corpus';
import { tmpDir, rmDir, referenceFloats, sameFloats, bytesEqual } from './helpers';

const SIZES: Record<string, number> = { F64: 8, F32: 4, F16: 2, BF16: 2, I64: 8, I32: 4, I16: 2, I8: 1, U8: 1, F8_E4M3: 1, BOOL: 1 };

type RefTensor = { dtype: string; shape: number[]; bytes: Uint8Array };
type RefResult = { ok: true; tensors: Map<string, RefTensor> } | { ok: false; why: string };

/** Reference validator + decoder for one file, in BigInt arithmetic throughout. */
function refFile(bytes: Uint8Array): RefResult {
  const no = (why: string): RefResult => ({ ok: false, why });
  if (bytes.length < 8) return no('short');
  const n = new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(0, true);
  if (n < 8n || n > 100_000_000n || n > BigInt(bytes.length - 8)) return no('length');
  let header: unknown;
  try {
    const text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(bytes.subarray(8, 8 + Number(n)));
    header = JSON.parse(text);
  } catch {
    return no('json');
  }
  if (typeof header !== 'object' || header === null || Array.isArray(header)) return no('not object');
  const dataLen = BigInt(bytes.length) - 8n - n;
  const spans: [bigint, bigint][] = [];
  const tensors = new Map<string, RefTensor>();
  for (const key of Object.keys(header)) {
    const v = (header as Record<string, unknown>)[key];
    if (key === '__metadata__') {
      if (typeof v !== 'object' || v === null || Array.isArray(v) || Object.values(v).some((x) => typeof x !== 'string')) return no('metadata');
      continue;
    }
    if (typeof v !== 'object' || v === null || Array.isArray(v)) return no('entry');
    const { dtype, shape, data_offsets: o } = v as Record<string, unknown>;
    if (typeof dtype !== 'string' || !Object.hasOwn(SIZES, dtype)) return no('dtype');
    if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) return no('shape');
    if (!Array.isArray(o) || o.length !== 2 || !o.every((d) => Number.isSafeInteger(d) && d >= 0)) return no('offsets');
    const [b, e] = [BigInt(o[0]), BigInt(o[1])];
    const want = (shape as number[]).reduce((a, d) => a * BigInt(d), BigInt(SIZES[dtype]));
    if (e < b || e - b !== want) return no('size');
    spans.push([b, e]);
    tensors.set(key, { dtype, shape: shape as number[], bytes: bytes.subarray(8 + Number(n) + Number(b), 8 + Number(n) + Number(e)) });
  }
  spans.sort((x, y) => (x[0] < y[0] ? -1 : x[0] > y[0] ? 1 : x[1] < y[1] ? -1 : x[1] > y[1] ? 1 : 0));
  let pos = 0n;
  for (const [b, e] of spans) {
    if (b !== pos) return no('layout');
    pos = e;
  }
  if (pos !== dataLen) return no('coverage');
  return { ok: true, tensors };
}

/** Reference for what openCheckpoint should accept at `target` (file, folder, or index). */
function refCheckpoint(target: string): RefResult {
  const no = (why: string): RefResult => ({ ok: false, why });
  const isFile = (p: string) => fs.existsSync(p) && fs.statSync(p).isFile();
  let indexPath: string | undefined;
  if (isFile(target)) {
    if (!target.endsWith('.index.json')) return refFile(new Uint8Array(fs.readFileSync(target)));
    indexPath = target;
  } else if (isFile(path.join(target, 'model.safetensors'))) return refFile(new Uint8Array(fs.readFileSync(path.join(target, 'model.safetensors'))));
  else if (isFile(path.join(target, 'model.safetensors.index.json'))) indexPath = path.join(target, 'model.safetensors.index.json');
  else return no('nothing to open');
  let index: unknown;
  try {
    index = JSON.parse(new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(fs.readFileSync(indexPath)));
  } catch {
    return no('index json');
  }
  const wm = (index as { weight_map?: unknown } | null)?.weight_map;
  if (typeof index !== 'object' || Array.isArray(index) || typeof wm !== 'object' || wm === null || Array.isArray(wm)) return no('weight_map');
  const entries = Object.entries(wm);
  if (entries.length === 0) return no('empty weight_map');
  const dir = path.dirname(indexPath);
  const shardOf = new Map<string, string>();
  for (const [t, f] of entries) {
    if (typeof f !== 'string' || f === '' || path.isAbsolute(f) || f.split(/[\\/]/).includes('..') || f.includes('\0')) return no('shard name');
    shardOf.set(t, path.resolve(dir, f));
  }
  const all = new Map<string, RefTensor>();
  for (const shard of new Set(shardOf.values())) {
    if (!isFile(shard)) return no('missing shard');
    const r = refFile(new Uint8Array(fs.readFileSync(shard)));
    if (!r.ok) return r;
    for (const [t, v] of r.tensors) {
      if (all.has(t)) return no('duplicate');
      if (shardOf.get(t) !== shard) return no('unlisted or misplaced');
      all.set(t, v);
    }
  }
  if (all.size !== shardOf.size) return no('ghost');
  return { ok: true, tensors: all };
}

const dir = tmpDir('hostile');
after(() => rmDir(dir));

test('hostile corpus: every input gives a named ProtocolError or a correct result', () => {
  const corpus: HostileCase[] = generateCorpus();
  const targets = writeCorpus(dir, corpus);
  assert.ok(corpus.length >= 220, `corpus has ${corpus.length} cases`);
  assert.equal(new Set(corpus.map((c) => c.id)).size, corpus.length);

  const outcomes = new Map<string, number>();
  const byFamily = new Map<string, Map<string, number>>();
  let namedTensor = 0;
  let slowest = 0;
  for (const [i, c] of corpus.entries()) {
    const target = targets[i];
    const caseDir = path.join(dir, c.id);
    const ref = refCheckpoint(target);
    const t0 = performance.now();
    let outcome: string;
    try {
      const ck = openCheckpoint(target);
      try {
        if (!ref.ok) assert.fail(`${c.id}: reader accepted what the reference rejects (${ref.why})`);
        const refTensors: Map<string, RefTensor> = ref.tensors;
        assert.deepEqual(ck.entries.map((e) => e.name).sort(), [...refTensors.keys()].sort(), c.id);
        for (const e of ck.entries) {
          const want: RefTensor = refTensors.get(e.name)!;
          assert.equal(e.dtype, want.dtype, `${c.id}: ${e.name}`);
          assert.deepEqual(e.shape, want.shape, `${c.id}: ${e.name}`);
          assert.ok(bytesEqual(ck.readBytes(e.name), want.bytes), `${c.id}: bytes of ${e.name}`);
          if (isFloatDtype(e.dtype)) assert.ok(sameFloats(ck.readFloat32(e.name), referenceFloats(e.dtype, want.bytes)), `${c.id}: float32 of ${e.name}`);
        }
      } finally {
        ck.close();
      }
      outcome = 'ok';
    } catch (e) {
      if (e instanceof assert.AssertionError) throw e;
      assert.ok(e instanceof ProtocolError, `${c.id}: threw a non-protocol error: ${e instanceof Error ? e.stack : String(e)}`);
      assert.ok(!ref.ok, `${c.id}: reader refused a valid input: ${e.message}`);
      assert.ok(e.message.includes(caseDir), `${c.id}: message does not name the file: ${e.message}`);
      const tensor = e.where !== undefined && e.where.indexOf(': ', caseDir.length) >= 0 ? e.where.slice(e.where.indexOf(': ', caseDir.length) + 2) : undefined;
      if (tensor !== undefined) {
        namedTensor++;
        assert.ok(e.message.includes(`"${tensor}"`), `${c.id}: where names tensor ${tensor} but the message does not: ${e.message}`);
        if (c.involved) assert.ok(c.involved.includes(tensor), `${c.id}: blames "${tensor.slice(0, 40)}", not one of ${c.involved.join(', ')}: ${e.message.slice(0, 300)}`);
      }
      outcome = e.code;
    }
    const ms = performance.now() - t0;
    slowest = Math.max(slowest, ms);
    outcomes.set(outcome, (outcomes.get(outcome) ?? 0) + 1);
    const fam = byFamily.get(c.family) ?? new Map<string, number>();
    fam.set(outcome, (fam.get(outcome) ?? 0) + 1);
    byFamily.set(c.family, fam);
  }
  const fmt = (m: Map<string, number>) =>
    [...m]
      .sort()
      .map(([k, v]) => `${k}=${v}`)
      .join(' ');
  console.log(`hostile corpus: ${corpus.length} cases; outcomes: ${fmt(outcomes)}; errors naming a tensor: ${namedTensor}; slowest case ${slowest.toFixed(1)} ms`);
  for (const [f, m] of [...byFamily].sort()) console.log(`  ${f.padEnd(26)} ${fmt(m)}`);
  assert.ok((outcomes.get('ok') ?? 0) >= 10, 'valid controls load');
  assert.ok(slowest < 5000, `slowest case ${slowest} ms`); // measured: see the printed line
});
