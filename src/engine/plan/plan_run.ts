// A target-size run (targetBpw > 0), before its blocks: the measurement (measured here, or reused from the run
// folder or a file given), the plan within the target, and the run's config with each layer's chosen method,
// bits and rank as overrides. The plan is a pure function of the measurement and the target, so a resumed run
// derives the same one again.

import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { bitsPerWeight, layerConfigFor, type QuantizeConfig } from '../../protocol/config';
import { ErrorCode } from '../../protocol/messages';
import type { LayerMeasurement, Measurements, Plan } from '../../protocol/plan';
import { ProtocolError } from '../../protocol/rpc';
import type { ComputeRuntime } from '../compute/runtime';
import { atomicWriteFile } from '../io/atomic';
import { canonicalJson, outputConfig, type RunFingerprint } from '../run/fingerprint';
import type { Calibration } from '../run/pipeline_llama';
import type { RunContext } from '../run/run_context';
import { allocate, InfeasibleTarget, minPlanBpw } from '../../protocol/allocate';
import { measureLlamaBlocks } from './measure';
import { candidateConfigs } from './measure_layer';

/** Keys a plan sets per layer (and the target itself): they do not change what is measured. */
const PLANNED_KEYS = ['targetBpw', 'bits', 'rank'];

/** What a measurement's errors depend on: model, calibration, and every output key but the planned ones. */
export function measurementKey(fp: RunFingerprint, config: QuantizeConfig): string {
  const c = outputConfig(config);
  for (const k of PLANNED_KEYS) delete c[k];
  return createHash('sha256')
    .update(canonicalJson({ model: fp.model, calib: fp.calib, engine: fp.engine, config: c }))
    .digest('hex');
}

/** The plan's choices as per-layer overrides after the user's own (the plan decides method, bits and rank). */
export function plannedConfig(config: QuantizeConfig, layers: readonly LayerMeasurement[], plan: Plan): QuantizeConfig {
  const overrides = { ...config.layerOverrides };
  plan.choices.forEach((ch, i) => {
    overrides[ch.name] = { ...(overrides[ch.name] ?? {}), ...layers[i].candidates[ch.candidate].config };
  });
  return { ...config, layerOverrides: overrides };
}

/** Refuses a target below every plan before anything is measured (the grid's bpw needs only the shapes). */
function checkReachable(ctx: RunContext): void {
  const { model, params } = ctx;
  const config = params.config;
  const shapes: LayerMeasurement[] = model.summary.linears.map((l) => {
    const lc = layerConfigFor(config, l.name);
    return {
      name: l.name,
      block: l.block,
      module: l.module,
      rows: l.rows,
      cols: l.cols,
      sampledRows: 0,
      gain: 1,
      streamEnergy: 1,
      candidates: candidateConfigs(lc, l.rows, l.cols).map((c) => ({ config: c, bpw: bitsPerWeight({ ...lc, ...c }, l.rows, l.cols), loss: 0 })),
    };
  });
  const min = minPlanBpw(shapes);
  if (min > config.targetBpw)
    throw new ProtocolError(
      ErrorCode.BadConfig,
      `targetBpw ${config.targetBpw} is below the smallest plan for ${model.summary.path}: ${min.toFixed(3)} bits per weight (every layer at 2 bits, rank 0, group ${config.groupSize})`,
      'targetBpw',
      `ask for at least ${Math.ceil(min * 1000) / 1000}, or a larger groupSize (fewer scales per weight)`,
    );
}

function readMeasurements(file: string): Measurements | undefined {
  try {
    const m = JSON.parse(readFileSync(file, 'utf8')) as Measurements;
    return m && m.format === 2 && Array.isArray(m.layers) ? m : undefined;
  } catch {
    return undefined;
  }
}

/**
 * The measurement this run's config needs: the file given (--measurements), the folder's own when it still applies,
 * or a new measurement pass. Written to the folder (atomically: a measurement is kept only complete).
 */
export async function measurementFor(ctx: RunContext, calib: Calibration, rt: ComputeRuntime): Promise<Measurements> {
  const { dir, hooks, manifest: m } = ctx;
  const config = ctx.params.config;
  checkReachable(ctx);
  const key = measurementKey(m.fingerprint, config);
  let meas: Measurements | undefined;
  const given = ctx.params.measurementsPath;
  if (given) {
    meas = readMeasurements(given);
    if (!meas) throw new ProtocolError(ErrorCode.InvalidParams, `${given} is not a LoPRo measurements file`, given, 'pass the measurements.json of an earlier target-size run');
    if (meas.key !== key)
      throw new ProtocolError(
        ErrorCode.IncompatibleCheckpoint,
        `${given} was measured on another model, calibration text or config (only the target, bits and rank may differ)`,
        given,
        'run without --measurements to measure again',
      );
    hooks.log('info', `reusing the measurement ${given} (${meas.layers.length} layers)`);
  } else if (existsSync(dir.measurementsFile)) {
    meas = readMeasurements(dir.measurementsFile);
    if (meas?.key === key) {
      hooks.log('info', `reusing this folder's measurement (${meas.layers.length} layers, measured in ${meas.seconds.toFixed(1)} s)`);
      return meas;
    }
    meas = undefined;
  }
  if (!meas) {
    const t0 = performance.now();
    const layers = await measureLlamaBlocks(ctx, calib, rt, dir.scratchDir);
    meas = { format: 2, modelPath: m.modelPath, key, layers, seconds: (performance.now() - t0) / 1000 };
    hooks.log('info', `measurement pass: ${layers.length} layers × ${layers[0]?.candidates.length ?? 0} candidates in ${meas.seconds.toFixed(1)} s`);
  }
  // The folder's copy, also when reused from elsewhere: the run is self-contained.
  atomicWriteFile(dir.measurementsFile, JSON.stringify(meas));
  return meas;
}

export async function planRun(ctx: RunContext, calib: Calibration, rt: ComputeRuntime): Promise<void> {
  const config = ctx.params.config;
  const meas = await measurementFor(ctx, calib, rt);
  let plan: Plan;
  try {
    plan = allocate(meas.layers, config.targetBpw);
  } catch (e) {
    if (e instanceof InfeasibleTarget)
      throw new ProtocolError(ErrorCode.BadConfig, `targetBpw ${config.targetBpw}: ${e.message}`, 'targetBpw', `ask for at least ${e.minBpw.toFixed(3)}`);
    throw e;
  }
  ctx.manifest.plan = plan;
  ctx.params = { ...ctx.params, config: plannedConfig(config, meas.layers, plan) };
  ctx.hooks.log('info', `plan for ${config.targetBpw} bits per weight: ${plan.bpw.toFixed(4)} bpw, ${describePlan(meas.layers, plan)}`);
}

/** "q_proj: 3×W2 r4, 5×W3 r0; …" — how many layers of each module took which candidate. */
export function describePlan(layers: readonly LayerMeasurement[], plan: Plan): string {
  const by = new Map<string, Map<string, number>>();
  plan.choices.forEach((ch, i) => {
    const l = layers[i];
    const c = l.candidates[ch.candidate].config;
    const what = `${c.method === 'gptq' ? 'gptq ' : ''}W${c.bits}${c.method === 'gptq' ? '' : ` r${c.rank}`}`;
    const mod = l.module.replace(/^.*experts\.\d+\./, 'experts.');
    if (!by.has(mod)) by.set(mod, new Map());
    by.get(mod)!.set(what, (by.get(mod)!.get(what) ?? 0) + 1);
  });
  return [...by]
    .map(
      ([mod, counts]) =>
        `${mod}: ${[...counts]
          .sort((a, b) => a[0].localeCompare(b[0]))
          .map(([w, n]) => `${n}×${w}`)
          .join(', ')}`,
    )
    .join('; ');
}
