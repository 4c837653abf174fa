// Sequential block-by-block quantization of a decoder model, per ../shared/protocol.md and the original
// GPTQ llama.py (true-sequential): calibration windows → embeddings → for each block:
//   for each stage [q,k,v] → [o] → [gate,up (every expert's, the shared expert's)] → [down (every expert's)]:
//     run the block forward on every calibration window with the weights as they are NOW (earlier
//     stages already quantized), accumulating H = (2/N)·Σ XᵀX and mean|x| of each statistic the stage needs
//     (linears sharing an input share one; an expert's is its input over the tokens routed to it, with the
//     routing computed by the block as quantized so far);
//     quantize each linear of the stage with its effective layer config;
//   then the quantized block's outputs become the next block's inputs.
// After every block: parts, Hessians and outputs are written, then run.json (the commit record).
// The math (forward graphs, quantizers) lives in model/ and quant/; this file only orders it.

import { machineMemory, peakMemoryBytes } from '../util/peak_memory';
import { resolveBudgetMB } from '../../protocol/machine_memory';
import { layerConfigFor } from '../../protocol/config';
import {
  describeMemoryPlan,
  type MemoryPlan,
  memoryShapeOf,
  type PlannedLinear,
  planMemory,
  GPU_LAYERS_IN_FLIGHT,
  withLayersInFlight,
  withReadAhead,
} from '../../protocol/memory_plan';
import { ErrorCode } from '../../protocol/messages';
import { ProtocolError } from '../../protocol/rpc';
import type * as ort from 'onnxruntime-node';
import type { ComputeRuntime } from '../compute/runtime';
import { writeSafetensorsAtomicAsync, type TensorData } from '../io/safetensors_writer';
import { calibrationWindows } from '../model/calibration';
import { blockKind, blockLinears, expectedShapes, SEQUENTIAL_STAGES, statKey, statWidth, type BlockLinear, type ModelConfig, type StatKey } from '../model/config';
import { GpuBusySampler } from '../compute/gpu_busy';
import { BlockTensors, checkWeights, LlamaForward, type BlockWeights } from '../model/llama_forward';
import { isCancel, passStats, type PassStats } from './stat_passes';
import { KeptIntermediates, keptBytesPerRow, keptOutput, keptStageOf, keptStagePass } from './kept_stages';
import type { StatRequest } from '../model/llama_graph';
import { defaultBatch } from '../model/perplexity';
import { loadTokenizer, tokenizeFile } from '../model/tokenizer';
import { createActivationStore, loadActivationStore, type ActivationStore } from './activations';
import { throwIfCancelled, yieldToEventLoop } from './cancel';
import type { RunContext } from './run_context';
import { HessianSpool } from './hessian_spool';
import { ProgressTracker } from './progress';
import { quantizeLayer } from './quantize_layer';
import { inOrderInFlight } from './in_flight';
import { ReadAhead } from './read_ahead';
import { peekDawnGpu } from '../backend/gpu/dawn';
import { engineEnv } from '../env';
import { loproLayerTensors } from '../io/lopro_format';
import { atomicWriteFile } from '../io/atomic';
import type { LayerDetails, LayerReport } from '../../protocol/messages';
import { join } from 'node:path';

export interface Calibration {
  /** [n, ctx] token ids. */
  windows: Int32Array;
  n: number;
  ctx: number;
}

export async function prepareCalibration(ctx: RunContext): Promise<Calibration> {
  const { model, params, hooks } = ctx;
  const cfg = model.cfg!;
  const T = model.summary.ctx,
    n = params.config.calibSamples;
  const tok = loadTokenizer(model.summary.path);
  const t = tokenizeFile(tok, params.config.calibText, cfg.vocabSize);
  hooks.log('info', `calibration: ${t.ids.length} tokens from ${params.config.calibText}${t.cached ? ' (cached)' : ` in ${t.seconds.toFixed(1)} s`}; ${n} windows of ${T}`);
  return { windows: calibrationWindows(t.ids, T, n), n, ctx: T };
}

/** Records [i0, i0+nb) of a store as one [nb, …] array. */
export function gather(store: ActivationStore, i0: number, nb: number): Float32Array {
  const out = new Float32Array(nb * store.recordLen);
  for (let i = 0; i < nb; i++) out.set(store.get(i0 + i), i * store.recordLen);
  return out;
}

export function scatter(store: ActivationStore, i0: number, nb: number, data: Float32Array): void {
  for (let i = 0; i < nb; i++) store.set(i0 + i, data.subarray(i * store.recordLen, (i + 1) * store.recordLen));
}

/** Runs `use` with the embedding matrix on the device: uploaded once, not with every batch (a 7B one is 524 MB). */
async function withEmbedding<T>(rt: ComputeRuntime, cfg: ModelConfig, read: (name: string) => Float32Array, use: (embed: ort.Tensor) => Promise<T>): Promise<T> {
  const embedT = await rt.scoped('weights', () => rt.upload(rt.host(read('model.embed_tokens.weight'), [cfg.vocabSize, cfg.hiddenSize])));
  try {
    return await use(embedT);
  } finally {
    rt.release(embedT);
  }
}

/** The calibration windows' embeddings into X. */
export async function embedCalibration(
  fwd: LlamaForward,
  rt: ComputeRuntime,
  cfg: ModelConfig,
  calib: Calibration,
  X: ActivationStore,
  batches: [number, number][],
  read: (name: string) => Float32Array,
  signal: AbortSignal | undefined,
): Promise<void> {
  const T = calib.ctx;
  await withEmbedding(rt, cfg, read, async (embedT) => {
    for (const [i0, nb] of batches) {
      throwIfCancelled(signal);
      const x = await fwd.embedTensor(calib.windows.subarray(i0 * T, (i0 + nb) * T), nb, embedT, 'host');
      scatter(X, i0, nb, x.data as Float32Array);
    }
  });
}

/**
 * A block's calibration activations as device tensors, batch k made by `make(k)`. Null, warned, when the device has
 * no room (no EP reports free memory: the budget is a guess, and a full device is found here): the caller keeps
 * them on the host from then on.
 */
async function activationsOnDevice(
  rt: ComputeRuntime,
  batches: [number, number][],
  rowBytes: number,
  hooks: RunContext['hooks'],
  make: (k: number) => Promise<ort.Tensor>,
): Promise<ort.Tensor[] | null> {
  const xs: ort.Tensor[] = [];
  try {
    await rt.scoped('activations', async () => {
      for (let k = 0; k < batches.length; k++) {
        throwIfCancelled(hooks.signal);
        rt.claimDevice(batches[k][1] * rowBytes);
        xs.push(await make(k));
      }
    });
    return xs;
  } catch (e) {
    rt.release(...xs);
    if (isCancel(e, hooks)) throw e;
    hooks.log('warn', `calibration activations do not fit on the ${rt.ep} device (${e instanceof Error ? e.message.split('\n')[0] : String(e)}); keeping them on the host`);
    return null;
  }
}

/** Splits a stage's statistics into passes of at most `limit` float32 bytes (at least one key per pass), in order. */
export function passesOf(keys: readonly StatKey[], width: (k: StatKey) => number, limit: number): StatKey[][] {
  const out: StatKey[][] = [];
  let cur: StatKey[] = [],
    bytes = 0;
  for (const k of keys) {
    const kb = 4 * width(k) ** 2;
    if (cur.length && bytes + kb > limit) {
      out.push(cur);
      cur = [];
      bytes = 0;
    }
    cur.push(k);
    bytes += kb;
  }
  if (cur.length) out.push(cur);
  return out;
}

/**
 * The plan the pipeline runs by: memoryPlanOf, then the GPU backend's layers in flight, then the next block's weights
 * read ahead where the forwards run on a device (each where the budget has room; the config panel plans the same).
 */
export function runPlanOf(cfg: ModelConfig, N: number, T: number, memoryBudgetMB: number, devicePaths: boolean, backend: 'cpu' | 'gpu', available = machineMemory()): MemoryPlan {
  const plan = memoryPlanOf(cfg, N, T, memoryBudgetMB, !devicePaths, available);
  return withReadAhead(withLayersInFlight(plan, backend === 'gpu' ? GPU_LAYERS_IN_FLIGHT : 1), devicePaths);
}

/**
 * The memory plan (protocol/memory_plan.ts) of a calibrated run of this model: its largest block, layer, statistic
 * and stage, within memoryBudgetMB (0: the automatic share of this machine's memory, protocol/machine_memory.ts).
 */
export function memoryPlanOf(cfg: ModelConfig, N: number, T: number, memoryBudgetMB: number, hostSums: boolean, available = machineMemory()): MemoryPlan {
  const linears: PlannedLinear[] = [];
  for (let b = 0; b < cfg.numLayers; b++) for (const l of blockLinears(cfg, b)) linears.push({ block: b, input: l.input, expert: l.expert, rows: l.rows, cols: l.cols });
  const shape = memoryShapeOf(linears, { hidden: cfg.hiddenSize, heads: cfg.numHeads, ctx: T, samples: N, hostSums });
  return planMemory(shape, resolveBudgetMB(memoryBudgetMB, available));
}

/** Logs the plan (and warns when the budget is below its floor); returns the activation stores' byte limit. */
export function announceMemoryPlan(plan: MemoryPlan, hooks: RunContext['hooks']): number {
  const { line, belowFloor } = describeMemoryPlan(plan);
  hooks.log('info', line);
  if (belowFloor) hooks.log('warn', belowFloor);
  return plan.activationsSpilled ? 0 : Number.POSITIVE_INFINITY;
}

/**
 * Device memory the block's calibration activations may hold on a GPU EP (inputs and outputs): within it
 * they are uploaded once per block — or are the previous block's outputs, never re-uploaded — instead of
 * once per pass (five passes; 1 GiB each for a 7B block at 128 × 512 tokens). No EP reports free memory:
 * a device without room is found at the first upload, and the host path is taken from there.
 */
const DEVICE_ACTIVATION_BUDGET_BYTES = 4096 * 2 ** 20;

/**
 * Device memory a dense block's intermediates kept between its statistics passes may hold (kept_stages.ts: h1 and
 * the activation at most, 3.7 GiB for a 7B block at 128 × 512 tokens) beside the activations above.
 */
const DEVICE_INTERMEDIATES_BUDGET_BYTES = 4096 * 2 ** 20;

export function allFinite(a: Float64Array | Float32Array): boolean {
  for (let i = 0; i < a.length; i++) if (!Number.isFinite(a[i])) return false;
  return true;
}

export const suffixOf = (lin: BlockLinear) => lin.weight.replace(/^model\.layers\.\d+\./, '');

export async function runLlamaBlocks(ctx: RunContext, calib: Calibration, rt: ComputeRuntime): Promise<void> {
  const { model, dir, manifest: m, hooks, params } = ctx;
  const cfg = model.cfg!;
  const { n: N, ctx: T } = calib;
  const recordLen = T * cfg.hiddenSize;
  const fwd = new LlamaForward(cfg, T, rt);
  const B = defaultBatch(T);
  const devicePaths = rt.keepsDataOnDevice || engineEnv().testDevicePaths;
  const plan = runPlanOf(cfg, N, T, params.config.memoryBudgetMB, devicePaths, ctx.backend.kind);
  const budget = announceMemoryPlan(plan, hooks); // for the activation stores: in memory or spilled
  m.memoryPlan = { budgetMB: plan.budgetMB, ...(plan.auto ? { auto: plan.auto } : {}), peakBytes: plan.peak };
  const read = (name: string) => model.ckpt.readFloat32(name);
  // Every weight the exported model carries (norms, embedding, head too), not only the linears
  // quantized below: a NaN/Inf there would otherwise be copied into the output without a word.
  for (const [n, shape] of expectedShapes(cfg)) checkWeights(read(n), n, shape, cfg);
  const batches: [number, number][] = [];
  for (let i = 0; i < N; i += B) batches.push([i, Math.min(B, N - i)]);

  const blockUnits = (b: number) => blockLinears(cfg, b).reduce((s, l) => s + l.rows * l.cols, 0);
  // Progress: per block, one share per statistics stage and one for the outputs (passes), one for the layers, one for the commit.
  const PASSES = SEQUENTIAL_STAGES.length + 1;
  const unitsBefore = (b: number) => {
    let u = 0;
    for (let i = 0; i < b; i++) u += blockUnits(i) * (PASSES + 1);
    return u;
  };
  const total = unitsBefore(cfg.numLayers);
  const progress = new ProgressTracker(
    hooks.onProgress,
    total,
    `quantizing ${cfg.numLayers} blocks of ${model.summary.path} (${N} windows × ${T} tokens, EP ${rt.ep})`,
    unitsBefore(m.completedBlocks),
  );

  const { backend } = ctx;
  // On a GPU EP the Hessian sums stay on the device through a pass (statsOnDevice), and the calibration
  // activations live on the device through a block when they fit (xDev: this block's input batches; yDev: its
  // outputs, the next block's xDev). Tests take both paths on the CPU EP too (there "device" tensors are host ones).
  const sums = { onDevice: devicePaths };
  let keepActs = devicePaths && 2 * N * recordLen * 4 <= DEVICE_ACTIVATION_BUDGET_BYTES;
  let xDev: ort.Tensor[] | null = null,
    yDev: ort.Tensor[] | null = null;
  let wT: BlockTensors | undefined;
  let spool: HessianSpool | undefined;
  if (keepActs) hooks.log('info', `calibration activations kept on the ${rt.ep} device through each block (${((2 * N * recordLen * 4) / 2 ** 20).toFixed(0)} MiB)`);
  // With them, a dense block's passes also keep what the next pass starts from (kept_stages.ts).
  let layersInFlight = plan.layersInFlight; // 1 from the first layer that fails beside others (inOrderInFlight's retry)
  const kept = new KeptIntermediates(rt);
  const keptBytes = N * T * keptBytesPerRow(cfg);
  const anyDense = Array.from({ length: cfg.numLayers }, (_, b) => !blockKind(cfg, b).moe).includes(true);
  kept.off = !keepActs || !anyDense || keptBytes > DEVICE_INTERMEDIATES_BUDGET_BYTES;
  if (!kept.off) hooks.log('info', `dense blocks' intermediates kept on the ${rt.ep} device between passes (≤ ${(keptBytes / 2 ** 20).toFixed(0)} MiB)`);
  // The last block's outputs are nobody's input: not computed, not kept (a resume with every block committed has
  // nothing left to compute from). A fresh run on the device embeds straight into device tensors (block 0's xDev),
  // never through the host.
  const lastBlock = cfg.numLayers - 1;
  const noActivations = () => createActivationStore(0, recordLen, budget, join(dir.scratchDir, 'none.f32'));
  let X: ActivationStore;
  if (m.completedBlocks > lastBlock) X = noActivations();
  else if (m.completedBlocks > 0) X = loadActivationStore(dir.actsFile(m.completedBlocks - 1), N, recordLen, budget, join(dir.scratchDir, `in-${m.completedBlocks}.f32`));
  else {
    if (keepActs) {
      const window = (k: number) => calib.windows.subarray(batches[k][0] * T, (batches[k][0] + batches[k][1]) * T);
      xDev = await withEmbedding(rt, cfg, read, (embedT) => activationsOnDevice(rt, batches, recordLen * 4, hooks, (k) => fwd.embedTensor(window(k), batches[k][1], embedT)));
      keepActs = xDev !== null;
    }
    X = xDev ? noActivations() : createActivationStore(N, recordLen, budget, join(dir.scratchDir, 'in-0.f32'));
    if (!xDev) await embedCalibration(fwd, rt, cfg, calib, X, batches, read, hooks.signal);
  }
  if (plan.activationsSpilled)
    hooks.log(
      'info',
      `calibration activations (${((2 * N * recordLen * 4) / 2 ** 20).toFixed(0)} MiB per block boundary) do not fit memoryBudgetMB beside the rest: spilled to ${dir.scratchDir}`,
    );
  // Where the time goes: forward passes + Hessians on the EP, layers, commits to disk; and how busy the GPU was in
  // each (the busy share of the seconds that have samples).
  const spent = { forwards: 0, layers: 0, commits: 0 };
  const gpuBusy = rt.ep !== 'cpu' || backend.kind === 'gpu' ? await GpuBusySampler.start() : null;
  const busy = { forwards: [0, 0], layers: [0, 0], commits: [0, 0] }; // [busy seconds, sampled seconds]
  let committing: Promise<void> = Promise.resolve(),
    background = 0; // the block commit in flight; its seconds
  let lapT = performance.now();
  const lap = (k: keyof typeof spent) => {
    const t = performance.now();
    spent[k] += (t - lapT) / 1000;
    const b = gpuBusy?.lap();
    if (b) {
      busy[k][0] += (b.busy / 100) * ((t - lapT) / 1000);
      busy[k][1] += (t - lapT) / 1000;
    }
    lapT = t;
  };
  let gpuRun: ReturnType<GpuBusySampler['stop']> = null;
  const readAhead = ReadAhead.create(cfg, model.ckpt, plan.readAhead);
  const firstBlock = m.completedBlocks;
  try {
    for (let b = m.completedBlocks; b < cfg.numLayers; b++) {
      const w: BlockWeights = await readAhead.take(b, read);
      readAhead.start(b + 1); // while this block runs
      // The block's weights as the graphs take them, uploaded when a pass first reads them: a quantized layer
      // replaces its own tensor (below) before any pass reads it, so each weight goes to a GPU once, as Ŵ.
      const blockT = new BlockTensors(fwd, rt, w);
      wT = blockT;
      if (keepActs && !xDev) {
        xDev = await activationsOnDevice(rt, batches, recordLen * 4, hooks, (k) => rt.upload(rt.host(gather(X, batches[k][0], batches[k][1]), [batches[k][1], T, cfg.hiddenSize])));
        keepActs = xDev !== null;
      }
      const xOf = (k: number) => xDev?.[k] ?? gather(X, batches[k][0], batches[k][1]);
      const lins = blockLinears(cfg, b);
      const P = blockUnits(b);
      const parts: TensorData[] = [];
      // The block's Hessian cache goes to disk pass by pass (hessian_spool.ts), not into memory: at most H and
      // mean|x| per linear and the shared mlp_in.
      spool = params.config.keepHessians ? new HessianSpool(dir.hessianFile(b), 2 * (lins.length + 1)) : undefined;
      const reports: LayerReport[] = [];
      const details: Record<string, LayerDetails> = {};
      hooks.onProgress({ kind: 'report', message: `block ${b + 1}/${cfg.numLayers}`, block: b, percentage: undefined });
      // Rows routed to each expert (from the mlp_in stage's pass), and which experts are calibrated on every token.
      let routed: Float64Array | undefined;
      const allTokens = (e: number) => params.config.expertCalibration === 'all' || (routed?.[e] ?? 0) < params.config.expertMinTokens;
      const keyOf = (l: BlockLinear): StatKey => statKey(l, l.expert !== undefined && allTokens(l.expert));
      for (const stage of SEQUENTIAL_STAGES) {
        const members = lins.filter((l) => stage.includes(l.input));
        if (!members.length) continue;
        const sparseIn = stage.includes('mlp_in') && members.some((l) => l.expert !== undefined);
        // The mlp_in stage of a sparse block measures every expert's routed rows first (with the shared
        // input), so each expert's statistic can be chosen; its all-token statistic is mlp_in itself.
        const keys: StatKey[] = [];
        if (sparseIn && params.config.expertCalibration === 'all') keys.push('mlp_in');
        else if (sparseIn) keys.push('mlp_in', ...new Set(members.filter((l) => l.expert !== undefined).map((l) => statKey(l))));
        else for (const l of members) if (!keys.includes(keyOf(l))) keys.push(keyOf(l));
        const stageStats = new Map<StatKey, PassStats>();
        const done = new Set<BlockLinear>();
        const passes = passesOf(keys, (k) => statWidth(cfg, lins, k), plan.passFloat32Bytes);
        for (const pass of passes) {
          const req: StatRequest = sparseIn && pass.includes('mlp_in') ? ['routing', ...pass] : pass;
          // One pass over the calibration windows with the block as it is now: from the values the pass before kept
          // where they are on the device (a dense block), else from the block's input.
          const stage = xDev && !blockKind(cfg, b).moe ? keptStageOf(req) : null;
          const res =
            (stage && xDev && (await keptStagePass(fwd, rt, stage, xDev, batches, wT, b, kept, hooks, N, T))) ||
            (await passStats(fwd, rt, xOf, batches, wT, b, req, hooks, N, T, sums));
          if (res.routed) routed = res.routed;
          lap('forwards');
          for (const [k, st] of res.stats) {
            if (!allFinite(st.H))
              throw new ProtocolError(
                ErrorCode.NonFinite,
                `block ${b}: non-finite activations at ${k}, the input of ${members.map((l) => l.module).join('/')}`,
                members[0].name,
                'the model produces inf/NaN on the calibration text (check the weights)',
              );
            stageStats.set(k, st);
            const n = Math.sqrt(st.H.length);
            // Cached for layer/requantize in float32 (half the disk of float64: 1.4 GB per 7B block).
            spool?.add([
              { name: `${k}::H`, dtype: 'F32', shape: [n, n], data: st.H32 }, // read back by requantize.ts (measuredStatKey)
              { name: `${k}::abs_mean`, dtype: 'F32', shape: [n], data: Float32Array.from(st.absMean) },
            ]);
          }
          progress.advance(
            P / passes.length,
            `block ${b} ${pass.length > 3 ? `${pass.length} statistics` : pass.join(', ')}: Hessian${pass.length > 1 ? 's' : ''} from ${N} windows`,
            { block: b },
          );
          // The stage's linears whose statistic is now measured, in block order; each is quantized on the run's
          // backend and replaces its own weight tensor, so later passes see it. On the GPU backend the next layers
          // are started while one's results are handled (its kernels queue on the device while the host copies Ŵ
          // into the forward runtime); results are taken in block order either way.
          const statKeyOf = (lin: BlockLinear): StatKey => (sparseIn && lin.expert !== undefined && allTokens(lin.expert) ? 'mlp_in' : keyOf(lin));
          const statOf = (lin: BlockLinear) => stageStats.get(statKeyOf(lin));
          const ready = members.filter((lin) => !done.has(lin) && statOf(lin));
          for (const lin of ready) done.add(lin);
          const quantize = (lin: BlockLinear) => {
            const st = statOf(lin)!;
            return quantizeLayer(
              backend,
              { name: lin.name, block: b, module: lin.module, rows: lin.rows, cols: lin.cols, W: w[suffixOf(lin)], H: st.H, H32: st.H32, absMean: st.absMean },
              layerConfigFor(params.config, lin.name),
              { seed: params.config.seed, compare: params.config.compare, warn: (msg) => hooks.log('warn', msg) },
            );
          };
          await inOrderInFlight(
            ready,
            layersInFlight,
            quantize,
            async (out, lin) => {
              const lc = layerConfigFor(params.config, lin.name);
              const sfx = suffixOf(lin);
              if (lin.expert !== undefined) {
                out.report.expert = lin.expert;
                out.report.tokens = routed?.[lin.expert] ?? 0;
              }
              const k = statKeyOf(lin);
              out.report.statistic = k === 'mlp_in' && lin.expert !== undefined ? `mlp_in@${lin.expert}:all` : k;
              await blockT.set(sfx, out.wHat); // later stages are measured through the quantized layer
              parts.push(...loproLayerTensors(lin.name, out.stored));
              reports.push(out.report);
              if (out.details) details[lin.name] = out.details;
              hooks.onLayerDone(out.report);
              const r = out.report;
              const base = r.baselines?.gptq ? ` (GPTQ ${r.baselines.gptq.toExponential(2)})` : '';
              const tok = r.tokens === undefined ? '' : ` ${r.tokens} tokens${r.statistic?.endsWith(':all') ? ' (calibrated on all)' : ''}`;
              progress.advance(
                lin.rows * lin.cols,
                `block ${b} ${lin.module} ${lin.rows}×${lin.cols} ${lc.method} W${lc.bits} bpw ${r.bpw.toFixed(3)} loss ${r.proxyLoss.toExponential(3)}${tok}${base}`,
                { block: b, layer: lin.name },
              );
              await yieldToEventLoop();
            },
            () => throwIfCancelled(hooks.signal),
            (e, lin) => {
              if (isCancel(e, hooks)) return false;
              // A device out of memory with several layers' buffers (the backends report no free memory before).
              layersInFlight = 1;
              hooks.log(
                'warn',
                `block ${b} ${lin.module} failed with ${plan.layersInFlight} layers at once (${e instanceof Error ? e.message.split('\n')[0] : String(e)}); run again alone, one layer at a time from here on`,
              );
              return true;
            },
          );
          // A pass's Hessians are dropped once its linears are done (mlp_in is kept: all-token experts use it).
          for (const k of pass) if (k !== 'mlp_in') stageStats.delete(k);
          lap('layers');
        }
        const missing = members.filter((l) => !done.has(l));
        if (missing.length) throw new ProtocolError(ErrorCode.Internal, `block ${b}: no statistic measured for ${missing.map((l) => l.module).join(', ')}`, missing[0].name);
        if (sparseIn && routed) {
          const few = [...routed].map((c, e) => [c, e] as const).filter(([, e]) => allTokens(e));
          if (few.length)
            hooks.log(
              'info',
              `block ${b}: ${params.config.expertCalibration === 'all' ? 'every expert calibrated on all tokens (expertCalibration all)' : `experts ${few.map(([c, e]) => `${e} (${c} tokens)`).join(', ')} routed fewer than ${params.config.expertMinTokens} calibration tokens: calibrated on all tokens`}`,
            );
        }
      }
      // The quantized block's outputs: the next block's inputs.
      const outputs = b < lastBlock;
      const Y = createActivationStore(outputs ? N : 0, recordLen, budget, join(dir.scratchDir, `in-${b + 1}.f32`));
      try {
        for (let k = 0; outputs && k < batches.length; k++) {
          const [i0, nb] = batches[k];
          throwIfCancelled(hooks.signal);
          // On the device they stay there as the next block's input (their host copy, the resume record, comes down
          // in the commit below).
          if (xDev) (yDev ??= []).push((await keptOutput(fwd, xDev[k], wT, b, kept, k)) ?? (await fwd.blockTensor(xDev[k], wT, b)));
          else scatter(Y, i0, nb, (await fwd.block(gather(X, i0, nb), nb, wT, b)).y);
          await yieldToEventLoop();
        }
        throwIfCancelled(hooks.signal);
      } catch (e) {
        Y.dispose();
        throw e;
      } finally {
        kept.dispose();
        await wT.release();
        wT = undefined;
      }
      lap('forwards');
      // Commit: parts, Hessians, outputs, then run.json — written in the background while the next block
      // computes (1.8 GB with fsyncs per 7B-shaped block: seconds of the main thread otherwise). One
      // commit at a time, in block order, run.json last; what it writes is not touched again. A failed
      // commit surfaces at the next block's commit (or the end) and stops the run; a crash before run.json
      // is written resumes from the block before, as always.
      const blockSpool = spool;
      // The resume record of outputs kept on the device is read back inside the commit, off this path: the copies
      // queue behind the next block's first pass and run while that block's layers keep the quantization backend
      // busy. The tensors stay alive until then (the next block releases its inputs after this commit settles).
      const ys = yDev;
      const record = async () => {
        if (ys) for (let k = 0; k < ys.length; k++) scatter(Y, batches[k][0], batches[k][1], await rt.scoped('activations', () => rt.download(ys[k])));
      };
      const commitBlock = async () => {
        const t0 = performance.now();
        await writeSafetensorsAtomicAsync(dir.blockFile(b), parts, { layers: JSON.stringify(reports.map((r) => r.name)) });
        if (blockSpool?.count) await blockSpool.commitTo({ nsamples: String(N), ctx: String(T) });
        atomicWriteFile(dir.detailsFile(b), JSON.stringify(details));
        if (outputs) {
          await record();
          await Y.persistAsync(dir.actsFile(b));
        }
        const names = new Set(reports.map((r) => r.name));
        m.layers = m.layers.filter((l) => !names.has(l.name)).concat(reports);
        m.completedBlocks = b + 1;
        ctx.commit();
        dir.pruneActivations(b);
        background += (performance.now() - t0) / 1000;
        // "done" = committed: a resume starts after this block (the next block's layers may already be reported).
        progress.advance(P, `block ${b + 1}/${cfg.numLayers} done`, { block: b });
      };
      await committing; // the previous block's commit is complete (or throws here) before this one starts
      committing = commitBlock();
      committing.catch(() => undefined); // observed at the next await; no unhandled rejection meanwhile
      X.dispose();
      X = Y;
      if (xDev) rt.release(...xDev);
      xDev = yDev;
      yDev = null;
      lap('commits');
    }
    await committing;
    lap('commits');
  } finally {
    await committing.catch(() => undefined); // nothing is left writing when the run returns (or fails, or is cancelled)
    spool?.dispose(); // an uncommitted block's (a committed one's is gone already)
    X.dispose();
    kept.dispose();
    await wT?.release();
    for (const ts of [xDev, yDev]) if (ts) rt.release(...ts);
    fwd.dispose();
    await readAhead.close();
    gpuRun = gpuBusy?.stop() ?? null;
  }
  if (plan.readAhead) hooks.log('info', `weights read ahead on a worker thread for ${readAhead.served} of ${cfg.numLayers - firstBlock} blocks (the first is read directly)`);
  const busyOf = (k: keyof typeof busy) => (busy[k][1] > 0 ? `GPU busy ${((100 * busy[k][0]) / busy[k][1]).toFixed(0)} %` : '');
  const [bf, bl] = [busyOf('forwards'), busyOf('layers')];
  hooks.log(
    'info',
    `time: forward passes + Hessians ${spent.forwards.toFixed(1)} s (EP ${rt.ep}${bf && `, ${bf}`}), layers ${spent.layers.toFixed(1)} s${bl && ` (${bl})`}, commits ${spent.commits.toFixed(1)} s (${background.toFixed(1)} s of writes in the background); peak host memory ${(peakMemoryBytes() / 2 ** 30).toFixed(2)} GiB (budget ${plan.budgetMB} MiB${plan.auto ? ', automatic' : ''}, plan ${(plan.peak / 2 ** 30).toFixed(2)} GiB)`,
  );
  // Copies vs compute vs graph building: the runtime's counters over the whole run (the copy graphs' GB/s: what the
  // host↔GPU copies achieved, waits for the GPU included, against a PCIe link's tens of GB/s).
  const c = rt.counters,
    gb = (b: number) => (b / 1e9).toFixed(2);
  hooks.log(
    'info',
    `runtime: ${c.runs} ORT runs in ${(c.runMs / 1000).toFixed(1)} s (compute + the copies they imply), host→device ${gb(c.h2dBytes)} GB in ${c.h2dCopies} feeds, device→host ${gb(c.d2hBytes)} GB in ${c.d2hCopies} outputs, ${c.sessionsCreated} sessions built in ${(c.sessionCreateMs / 1000).toFixed(1)} s`,
  );
  if (rt.ep !== 'cpu') hooks.log('info', `runtime by graph (most bytes first): ${rt.graphSummary(12)}`);
  if (gpuRun)
    hooks.log('info', `GPU busy ${gpuRun.busy.toFixed(0)} % of the run (NVML utilization, ${gpuRun.samples} samples by nvidia-smi), GPU memory peak ${gpuRun.peakMemMiB} MiB`);
  else if (rt.ep !== 'cpu' || backend.kind === 'gpu') hooks.log('info', 'GPU busy: not measured (no nvidia-smi on this machine)');
  const dawn = await peekDawnGpu();
  if (dawn && dawn.counters.submits > 0) {
    const d = dawn.counters;
    hooks.log(
      'info',
      `dawn (${dawn.label}): ${d.submits} submits, ${d.dispatches} dispatches, host→device ${gb(d.uploadBytes)} GB in ${d.uploads} writes, device→host ${gb(d.readbackBytes)} GB in ${d.readbacks} reads`,
    );
  }
  progress.end(`quantized ${cfg.numLayers} blocks`);
}
