// Runs model-level corpus cases through the engine in process (quantizeRun, as `lopro quantize`
// and the worker call it) and classifies each outcome. A case passes when it got exactly what it
// expects: an error of the expected code whose one-line CLI rendering names the file / tensor /
// field, or a run whose native output is finite, sane and (for 'same') byte-identical to the
// unmutated model's. Anything else — a non-ProtocolError (crash), a timeout (hang), a wrong code,
// an error for a valid input, a success for an invalid one — is a failure with its reason.

import { join } from 'node:path';
import { mkdirSync } from 'node:fs';
import { quantizeRun } from '../../../src/engine/run/pipeline';
import { evalPath } from '../../../src/engine/run/evaluate';
import { formatUserError } from '../../../src/engine/cli';
import { openCheckpoint } from '../../../src/engine/io/checkpoint';
import { readLoproLayer } from '../../../src/engine/io/lopro_format';
import { dequantizeStored } from '../../../src/engine/run/stored';
import type { LoproStoredLayer } from '../../../src/engine/quant/lopro_dequant';
import { DEFAULT_CONFIG, type QuantizeConfig } from '../../../src/protocol/config';
import { ProtocolError } from '../../../src/protocol/rpc';
import type { RunSummary } from '../../../src/protocol/messages';
import { CORPUS_CONFIG, type Built, type ModelCase, type OkResult } from './model_corpus';

/** A case taking longer than this is a hang (measured: the slowest ok case ~2 s on a loaded 2-core VM). */
export const CASE_TIMEOUT_MS = 30_000;
/** Sanity bound on tr(ΔHΔᵀ)/tr(WHWᵀ) of any layer of an ok run (measured max ≈ 0.13, RTN W2). */
export const MAX_REL_PROXY_LOSS = 0.5;
const FP16_MIN_NORMAL = 2 ** -14;

export interface CaseOutcome {
  id: string;
  family: string;
  /** 'ok' or the error code. */
  outcome: string;
  /** Undefined when the case behaved as expected. */
  failure?: string;
  ms: number;
  line?: string;
  /** Outcome of `lopro eval` on the same (unquantized) model folder, when the family is evaluated. */
  evalOutcome?: string;
}

/** Families whose model folders are also evaluated (the others share the base model or are slow). */
export const EVAL_FAMILIES = new Set(['config', 'checkpoint', 'weights', 'calibration']);

function nativeBytes(runDir: string): Map<string, Uint8Array> {
  const ck = openCheckpoint(join(runDir, 'native'));
  try {
    return new Map(ck.entries.map((e) => [e.name, ck.readBytes(e.name).slice()]));
  } finally {
    ck.close();
  }
}

function storedLayers(runDir: string, summary: RunSummary): Map<string, LoproStoredLayer> {
  const ck = openCheckpoint(join(runDir, 'native'));
  try {
    return new Map(summary.layers.map((l) => [l.name, readLoproLayer(ck, l.name)]));
  } finally {
    ck.close();
  }
}

const quiet = { onProgress: () => {}, onLayerDone: () => {}, log: () => {} };

export async function runQuantize(model: string, calib: string, extra: Record<string, unknown> | undefined, runDir: string): Promise<RunSummary> {
  const config = { ...DEFAULT_CONFIG, ...CORPUS_CONFIG, calibText: calib, ...extra } as QuantizeConfig;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const hang = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`HANG: no result after ${CASE_TIMEOUT_MS} ms`)), CASE_TIMEOUT_MS)));
  try {
    return await Promise.race([quantizeRun({ modelPath: model, config, runDir, resume: false }, quiet), hang]);
  } finally {
    clearTimeout(timer);
  }
}

/** Base runs for 'same' cases, keyed by method. */
export type Baselines = Map<string, Map<string, Uint8Array>>;

/**
 * `lopro eval <model folder> --text <calib>` on the case's unquantized folder: a model the quantizer
 * refuses must not get a perplexity either (else eval hides the defect), one it accepts must get a
 * finite one; never anything but a ProtocolError.
 */
async function evalCase(c: ModelCase, built: Built): Promise<{ outcome: string; failure?: string }> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const hang = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`HANG: eval gave no result after ${CASE_TIMEOUT_MS} ms`)), CASE_TIMEOUT_MS)));
  const modelError = !('ok' in c.expect) && c.family !== 'qconfig';
  try {
    const ppl = await Promise.race([evalPath(built.model, [built.calib], { ctx: CORPUS_CONFIG.ctx, ep: 'cpu' }, quiet), hang]);
    const v = Object.values(ppl)[0];
    if (modelError) return { outcome: 'ok', failure: `eval of a model the quantizer refuses gave perplexity ${v}` };
    if (!Number.isFinite(v)) return { outcome: 'ok', failure: `eval gave perplexity ${v}` };
    return { outcome: 'ok' };
  } catch (e) {
    if (!(e instanceof ProtocolError)) return { outcome: 'CRASH', failure: `eval: not a ProtocolError: ${e instanceof Error ? e.stack : String(e)}` };
    if (e.code === 'E_INTERNAL') return { outcome: e.code, failure: `eval: internal error: ${formatUserError(e)}` };
    if (!modelError && !(c.family === 'calibration' && !('ok' in c.expect))) return { outcome: e.code, failure: `eval refused a valid model: ${formatUserError(e)}` };
    return { outcome: e.code };
  } finally {
    clearTimeout(timer);
  }
}

/** runCase, with known gaps turned around: a gap case that fails is KNOWN_GAP, one that passes is a failure. */
export async function runCase(c: ModelCase, root: string, base: Baselines): Promise<CaseOutcome> {
  const o = await runCaseRaw(c, root, base);
  if (c.evalGap) {
    if (!o.evalFailure) o.evalFailure = `eval marked as a known gap (${c.evalGap}) but now behaves as expected: remove the mark`;
    else {
      o.evalOutcome = 'KNOWN_GAP';
      o.line = `${o.line ?? ''} | eval: ${o.evalFailure} — known: ${c.evalGap}`;
      o.evalFailure = undefined;
    }
  }
  if (o.evalFailure && !o.failure) o.failure = o.evalFailure;
  if (!c.gap) return o;
  if (o.failure) return { ...o, outcome: 'KNOWN_GAP', failure: undefined, line: `${o.failure} — known: ${c.gap}` };
  return { ...o, failure: `marked as a known gap (${c.gap}) but now behaves as expected: remove the mark` };
}

async function runCaseRaw(c: ModelCase, root: string, base: Baselines): Promise<CaseOutcome & { evalFailure?: string }> {
  const dir = join(root, c.id.replace(/\//g, '__'));
  mkdirSync(dir, { recursive: true });
  const built = c.build(dir);
  const runDir = join(dir, 'run');
  const t0 = performance.now();
  const ev = EVAL_FAMILIES.has(c.family) ? await evalCase(c, built) : undefined;
  const done = (outcome: string, failure?: string, line?: string) => ({
    id: c.id,
    family: c.family,
    outcome,
    failure,
    ms: performance.now() - t0,
    line,
    evalOutcome: ev?.outcome,
    evalFailure: ev?.failure,
  });
  let summary: RunSummary;
  try {
    summary = await runQuantize(built.model, built.calib, built.config, runDir);
  } catch (e) {
    if (!(e instanceof ProtocolError)) return done('CRASH', `not a ProtocolError: ${e instanceof Error ? e.stack : String(e)}`);
    const line = formatUserError(e);
    if ('ok' in c.expect) return done(e.code, `valid input refused: ${line}`, line);
    if (e.code !== c.expect.code) return done(e.code, `expected ${c.expect.code}, got: ${line}`, line);
    if (line.includes('\n')) return done(e.code, `error is not one line: ${line}`, line);
    const missing = c.expect.names(dir).filter((n) => !line.includes(n));
    if (missing.length) return done(e.code, `error does not name ${missing.map((m) => JSON.stringify(m)).join(', ')}: ${line}`, line);
    return done(e.code, undefined, line);
  }
  if (!('ok' in c.expect)) return done('ok', `expected ${c.expect.code}, but the run succeeded`);
  const stored = storedLayers(runDir, summary);
  const wHat = new Map([...stored].map(([k, v]) => [k, dequantizeStored(v)]));
  for (const l of summary.layers) {
    const w = wHat.get(l.name)!;
    if (w.length !== l.rows * l.cols) return done('ok', `${l.name}: Ŵ has ${w.length} values for ${l.rows}×${l.cols}`);
    const bad = w.findIndex((v) => !Number.isFinite(v));
    if (bad >= 0) return done('ok', `${l.name}: Ŵ[${bad}] = ${w[bad]} (silently non-finite output)`);
    if (!Number.isFinite(l.proxyLoss)) return done('ok', `${l.name}: proxy loss ${l.proxyLoss}`);
    if (!(l.relProxyLoss <= MAX_REL_PROXY_LOSS)) {
      // Weights below FP16's normal range cannot keep their FP16 group scale: Ŵ ≈ 0 is then the
      // right answer in absolute terms (error < 2^-14), though 100 % in relative terms.
      const W = built.input?.find((t) => t.name === `${l.name}.weight`)?.data as Float32Array | undefined;
      const tiny = W?.every((v) => Math.abs(v) < FP16_MIN_NORMAL) && w.every((v, i) => Math.abs(v - W[i]) < FP16_MIN_NORMAL);
      if (!tiny) return done('ok', `${l.name}: relative proxy loss ${l.relProxyLoss} (> ${MAX_REL_PROXY_LOSS}: silently wrong?)`);
    }
  }
  if (c.expect.ok === 'same') {
    const method = String(built.config?.method ?? CORPUS_CONFIG.method);
    const want = base.get(method);
    if (!want) return done('ok', `corpus bug: no base run for ${method}`);
    const got = nativeBytes(runDir);
    for (const [name, bytes] of want) {
      const g = got.get(name);
      if (!g) return done('ok', `output lacks ${name}, which the base model's run has`);
      if (g.length !== bytes.length || g.some((v, i) => v !== bytes[i])) return done('ok', `${name} differs from the base model's run (should be identical)`);
    }
  }
  try {
    c.expect.check?.({ layers: summary.layers, wHat, stored, input: built.input } satisfies OkResult);
  } catch (e) {
    return done('ok', (e as Error).message);
  }
  return done('ok');
}

export async function baseRun(root: string, build: (dir: string) => { model: string; calib: string }, method: string): Promise<Map<string, Uint8Array>> {
  const dir = join(root, `base-${method}`);
  const b = build(dir);
  await runQuantize(b.model, b.calib, { method }, join(dir, 'run'));
  return nativeBytes(join(dir, 'run'));
}
