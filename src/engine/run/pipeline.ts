// `run/start` and `lopro quantize`: set up (model, calibration, fingerprint, run directory,
// resume), then hand over to the block loop (pipeline_llama.ts) or the data-free tensor loop
// (pipeline_tensors.ts), then write the native output and, when asked, evaluate it as exported.

import { assertBackendHolds } from './quantize_layer';
import { existsSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { resolve } from 'node:path';
import { describeIssues, validateConfig, withDefaults, type QuantizeConfig } from '../../protocol/config';
import { ErrorCode, type RunSummary } from '../../protocol/messages';
import { ProtocolError } from '../../protocol/rpc';
import { getRuntime, type ComputeRuntime } from '../compute/runtime';
import type { Backend } from '../quant/backend';
import { openBackend } from '../backend/open';
import { computeFingerprint, fingerprintMismatch, outputConfig, type RunFingerprint } from './fingerprint';
import { openModel, type OpenedModel } from './inspect';
import { RunDir, summaryOf, type RunManifest } from './rundir';
import type { QuantizeParams, RunContext, RunHooks } from './run_context';

export type { QuantizeParams, RunContext, RunHooks };
import { ENGINE_VERSION, RUN_FORMAT } from './version';
import { runTensorBlocks } from './pipeline_tensors';
import { peakMemoryBytes, resetPeakMemory } from '../util/peak_memory';
import { prepareCalibration, runLlamaBlocks } from './pipeline_llama';
import { writeNativeOutput } from './native';
import { evaluateRunOutput } from './evaluate';
import { measurementFor, planRun } from '../plan/plan_run';
import type { Measurements } from '../../protocol/plan';

function readCalibBytes(config: QuantizeConfig): Uint8Array | undefined {
  if (!config.calibText) return undefined;
  try {
    return readFileSync(config.calibText);
  } catch (e) {
    throw new ProtocolError(
      ErrorCode.BadCalibration,
      `cannot read calibration text ${config.calibText}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`,
      config.calibText,
      'pass an existing UTF-8 text file with --calib',
    );
  }
}

/**
 * The engine's one check of a run config, at its entry (CLI, worker `run/start`, demo, benches): the
 * defaults for missing keys, then every rule of validateConfig, unknown keys included. The CLI does
 * not validate before this; it shows the failing field as its flag (cli.ts).
 */
function checkedConfig(partial: QuantizeConfig): QuantizeConfig {
  const config = withDefaults(partial);
  const issues = validateConfig(config);
  if (issues.length) throw new ProtocolError(ErrorCode.BadConfig, describeIssues(issues), String(issues[0].field));
  return config;
}

/**
 * Entries a run folder holds before its first run.json (a run killed that early by an engine older
 * than the up-front manifest write below): such a folder is still ours to reuse.
 */
const RUN_DIR_ENTRIES = new Set(['run.lock', 'ckpt', 'hessians', 'details', 'candidates', 'scratch', 'native', 'measurements.json']);

/** The run folder holds a committed block, a complete run or a measurement pass (what --resume continues from). */
function committedAnything(dir: RunDir): boolean {
  if (existsSync(dir.measurementsFile)) return true;
  if (!dir.exists()) return false;
  try {
    const m = dir.readManifest();
    return m.completedBlocks > 0 || m.complete;
  } catch {
    return true; // unreadable: not ours to delete
  }
}

/** A fresh run may only take over an empty folder or an earlier run's folder. */
function checkOutDirUsable(dir: RunDir): void {
  if (!existsSync(dir.dir) || dir.exists()) return;
  if (readdirSync(dir.dir).some((f) => !RUN_DIR_ENTRIES.has(f) && !/\.tmp-\d+-[0-9a-f]+$/.test(f)))
    throw new ProtocolError(
      ErrorCode.InvalidParams,
      `${dir.dir} is not empty and is not a run directory`,
      dir.dir,
      'choose a new or empty --out folder (it will hold checkpoints and the quantized model)',
    );
}

export async function quantizeRun(params: QuantizeParams, hooks: RunHooks): Promise<RunSummary> {
  const t0 = Date.now();
  resetPeakMemory(); // this run's peak, not an earlier run's of the same engine process
  const config = checkedConfig(params.config);
  const model = openModel(params.modelPath, config.ctx);
  try {
    const calibBytes = readCalibBytes(config);
    if (model.summary.kind === 'llama' && !calibBytes)
      throw new ProtocolError(
        ErrorCode.BadCalibration,
        `${model.summary.path} is a model folder: its blocks are quantized on calibration text`,
        'calibText',
        'pass --calib FILE (e.g. fixtures/text/train.txt); bare .safetensors files are quantized data-free',
      );
    if (model.summary.kind === 'tensors' && config.targetBpw > 0)
      throw new ProtocolError(
        ErrorCode.BadConfig,
        `targetBpw needs a model folder: ${model.summary.path} is a bare safetensors file, whose layers have no calibration to measure candidates on`,
        'targetBpw',
        'quantize the model folder with --calib, or set bits and rank instead of a target',
      );
    if (model.summary.kind === 'tensors' && calibBytes) hooks.log('warn', 'a bare safetensors file has no forward pass: --calib is ignored, quantizing data-free (H = I)');
    const effective: QuantizeConfig = model.summary.kind === 'tensors' ? { ...config, calibText: '' } : config;
    const fingerprint = computeFingerprint(model.summary.path, effective, model.summary.kind === 'tensors' ? undefined : calibBytes);
    const dir = new RunDir(resolve(params.runDir));
    checkOutDirUsable(dir); // before the lock file makes the folder non-empty
    // A folder this run creates is removed again if the run ends before its first commit.
    const created = !existsSync(dir.dir);
    const unlock = dir.lock();
    let discarded = false;
    try {
      return await runLocked(params, hooks, model, dir, effective, fingerprint, calibBytes, t0);
    } catch (e) {
      // Nothing committed (no block, no complete run): leave nothing that looks like a run, resumable or not.
      if (!committedAnything(dir)) {
        dir.discardUncommitted();
        discarded = true;
      }
      throw e;
    } finally {
      unlock();
      if (discarded && created && readdirSync(dir.dir).length === 0) rmSync(dir.dir, { recursive: true, force: true });
    }
  } finally {
    model.ckpt.close();
  }
}

async function runLocked(
  params: QuantizeParams,
  hooks: RunHooks,
  model: OpenedModel,
  dir: RunDir,
  effective: QuantizeConfig,
  fingerprint: RunFingerprint,
  _calibBytes: Uint8Array | undefined,
  t0: number,
): Promise<RunSummary> {
  const config = effective;
  let manifest: RunManifest | undefined;
  if (params.resume && dir.exists()) {
    const saved = dir.readManifest();
    const why = fingerprintMismatch(saved.fingerprint, fingerprint, outputConfig(saved.config), outputConfig(effective));
    if (why)
      throw new ProtocolError(
        ErrorCode.IncompatibleCheckpoint,
        `cannot resume ${dir.dir}: ${why}`,
        dir.manifestFile,
        'run without --resume to start over (the folder is reused), or use the original model, config and calibration text',
      );
    manifest = { ...saved, config: effective, resumed: saved.completedBlocks > 0 || saved.resumed };
    hooks.log('info', `resuming ${dir.dir}: ${saved.completedBlocks}/${saved.numBlocks} ${model.summary.kind === 'llama' ? 'blocks' : 'tensors'} already done`);
  } else {
    if (params.resume) hooks.log('info', `nothing to resume in ${dir.dir}: starting a fresh run`);
    dir.resetForFreshRun();
  }
  // Leftovers of a killed session: temp files/folders of interrupted atomic writes, spilled activations.
  for (const f of dir.tempFiles()) rmSync(f, { recursive: true, force: true });
  rmSync(dir.scratchDir, { recursive: true, force: true });
  dir.ensure();
  const rt: ComputeRuntime | undefined = model.summary.kind === 'llama' ? await getRuntime(config.ep) : undefined;
  const { backend, why } = await openBackend(config.backend, config.threads);
  try {
    hooks.log('info', `backend ${backend.label} (${why})`);
    return await runOn(params, hooks, model, dir, effective, fingerprint, manifest, rt, backend, t0);
  } finally {
    await backend.close();
  }
}

async function runOn(
  params: QuantizeParams,
  hooks: RunHooks,
  model: OpenedModel,
  dir: RunDir,
  effective: QuantizeConfig,
  fingerprint: RunFingerprint,
  manifest: RunManifest | undefined,
  rt: ComputeRuntime | undefined,
  backend: Backend,
  t0: number,
): Promise<RunSummary> {
  const config = effective;
  if (manifest?.backend && manifest.backend.split(':')[0] !== backend.kind)
    hooks.log(
      'warn',
      `this run was started on the ${manifest.backend.split(':')[0]} backend and continues on the ${backend.kind} one: the blocks before agree with these to float32 rounding, not bit for bit`,
    );
  manifest ??= {
    format: RUN_FORMAT,
    engineVersion: ENGINE_VERSION,
    modelPath: model.summary.path,
    kind: model.summary.kind,
    config: effective,
    fingerprint,
    numBlocks: model.summary.numBlocks,
    completedBlocks: 0,
    layers: [],
    ep: rt?.ep ?? 'cpu',
    seconds: 0,
    resumed: false,
    complete: false,
    ctx: model.summary.kind === 'llama' ? model.summary.ctx : 0,
    calibSamples: model.summary.kind === 'llama' ? config.calibSamples : 0,
  };
  manifest.backend = backend.label;
  let last = Date.now();
  const m = manifest;
  const ctx: RunContext = {
    params: { ...params, config: effective },
    backend,
    model,
    dir,
    manifest: m,
    hooks,
    commit() {
      const t = Date.now();
      m.seconds += (t - last) / 1000;
      last = t;
      m.peakHostBytes = Math.max(m.peakHostBytes ?? 0, peakMemoryBytes());
      dir.writeManifest(m);
    },
  };
  if (!m.complete) assertBackendHolds(backend, model.linears);
  // run.json exists from the start, so a run killed before its first block commit is still a run
  // directory: --resume then restarts it from block 0.
  if (m.completedBlocks === 0 && !m.complete) ctx.commit();
  if (!m.complete) {
    if (model.summary.kind === 'llama') {
      const calib = await prepareCalibration(ctx);
      if (config.targetBpw > 0) await planRun(ctx, calib, rt!);
      await runLlamaBlocks(ctx, calib, rt!);
    } else await runTensorBlocks(ctx);
    hooks.log('info', 'writing the quantized model (native format)');
    writeNativeOutput(ctx.dir, ctx.model, ctx.manifest);
    m.complete = true;
    ctx.commit();
    rmSync(dir.scratchDir, { recursive: true, force: true });
  }
  if (params.evalTexts?.length) {
    const r = await evaluateRunOutput(dir, params.evalTexts, hooks, config.ep);
    m.perplexity = { ...(m.perplexity ?? {}), ...r.perplexity };
    m.kl = { ...(m.kl ?? {}), ...r.kl };
    ctx.commit();
  }
  hooks.log('info', `run finished in ${((Date.now() - t0) / 1000).toFixed(1)} s (this session)`);
  return summaryOf(m, dir.dir);
}

/**
 * `plan/measure` (the config panel's "Measure candidates"): a target-size run's measurement pass alone, written to
 * runDir/measurements.json, where a run started later with the same settings finds and reuses it. The folder is
 * locked meanwhile; a folder this creates is removed again if the pass fails or is cancelled.
 */
export async function measureRun(params: { modelPath: string; config: QuantizeConfig; runDir: string }, hooks: RunHooks): Promise<Measurements> {
  const config = checkedConfig(params.config);
  if (!(config.targetBpw > 0))
    throw new ProtocolError(ErrorCode.BadConfig, 'measuring candidates needs a target (targetBpw > 0)', 'targetBpw', 'set a target bits per weight first');
  const model = openModel(params.modelPath, config.ctx);
  try {
    const calibBytes = readCalibBytes(config);
    if (model.summary.kind !== 'llama' || !calibBytes)
      throw new ProtocolError(
        ErrorCode.BadConfig,
        `measuring candidates needs a model folder and calibration text (${model.summary.path})`,
        'calibText',
        'pass a model folder and --calib FILE',
      );
    const dir = new RunDir(resolve(params.runDir));
    checkOutDirUsable(dir);
    const created = !existsSync(dir.dir);
    const unlock = dir.lock();
    let ok = false;
    try {
      const rt = await getRuntime(config.ep);
      const { backend } = await openBackend(config.backend, config.threads);
      try {
        const fingerprint = computeFingerprint(model.summary.path, config, calibBytes);
        const manifest = { fingerprint, modelPath: model.summary.path } as RunManifest; // what the measurement reads of a run
        const ctx: RunContext = { params: { modelPath: params.modelPath, config, runDir: dir.dir, resume: false }, backend, model, dir, manifest, hooks, commit() {} };
        const meas = await measurementFor(ctx, await prepareCalibration(ctx), rt);
        ok = true;
        return meas;
      } finally {
        await backend.close();
        rmSync(dir.scratchDir, { recursive: true, force: true });
      }
    } finally {
      unlock();
      if (!ok && created && existsSync(dir.dir) && readdirSync(dir.dir).length === 0) rmSync(dir.dir, { recursive: true, force: true });
    }
  } finally {
    model.ckpt.close();
  }
}
