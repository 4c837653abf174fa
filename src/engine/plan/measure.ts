// The measurement pass of a target-size run: the calibration windows through the FLOAT model, block by block;
// per block one statistics pass for every linear's input (nothing is quantized, so no stage waits for
// another), each linear's candidates measured on it (measure_layer.ts), then the float block's outputs are the
// next block's inputs. An expert's statistic is the one over its routed rows (an expert routed no token has
// H = 0 and every candidate's loss 0: on the calibration text it does not matter, and the plan gives it the
// fewest bits). Orchestration only, like pipeline_llama.ts, whose pass helpers it shares.

import { join } from 'node:path';
import type * as ort from 'onnxruntime-node';
import { layerConfigFor } from '../../protocol/config';
import { ErrorCode } from '../../protocol/messages';
import type { LayerMeasurement } from '../../protocol/plan';
import { ProtocolError } from '../../protocol/rpc';
import type { ComputeRuntime } from '../compute/runtime';
import { blockLinears, statKey } from '../model/config';
import { LlamaForward, loadBlockWeights } from '../model/llama_forward';
import type { StatRequest } from '../model/llama_graph';
import { defaultBatch } from '../model/perplexity';
import { createActivationStore, type ActivationStore } from '../run/activations';
import { throwIfCancelled, yieldToEventLoop } from '../run/cancel';
import { allFinite, type Calibration, embedCalibration, gather, memoryPlanOf, passesOf, scatter, suffixOf } from '../run/pipeline_llama';
import { passStats } from '../run/stat_passes';
import { statWidth } from '../model/config';
import { ProgressTracker } from '../run/progress';
import type { RunContext } from '../run/run_context';
import { measureLayer } from './measure_layer';
import { blockGainsRaw, GAIN_WINDOWS, gainOf } from './sensitivity';

export async function measureLlamaBlocks(ctx: RunContext, calib: Calibration, rt: ComputeRuntime, scratch: string): Promise<LayerMeasurement[]> {
  const { model, hooks, params, backend } = ctx;
  const cfg = model.cfg!;
  const { n: N, ctx: T } = calib;
  const recordLen = T * cfg.hiddenSize;
  const fwd = new LlamaForward(cfg, T, rt);
  const B = defaultBatch(T);
  const plan = memoryPlanOf(cfg, N, T, params.config.memoryBudgetMB, !rt.keepsDataOnDevice);
  const budget = plan.activationsSpilled ? 0 : Number.POSITIVE_INFINITY; // its one store: in memory or spilled
  const read = (name: string) => model.ckpt.readFloat32(name);
  const batches: [number, number][] = [];
  for (let i = 0; i < N; i += B) batches.push([i, Math.min(B, N - i)]);
  const units = (b: number) => blockLinears(cfg, b).reduce((s, l) => s + l.rows * l.cols, 0);
  let total = 0;
  for (let b = 0; b < cfg.numLayers; b++) total += 2 * units(b);
  const progress = new ProgressTracker(hooks.onProgress, total, `measuring candidate configurations on ${cfg.numLayers} blocks (${N} windows × ${T} tokens)`, 0);
  const out: LayerMeasurement[] = [];
  let X: ActivationStore = createActivationStore(N, recordLen, budget, join(scratch, 'measure-0.f32'));
  let wT: Record<string, ort.Tensor> = {};
  const sums = { onDevice: rt.keepsDataOnDevice };
  try {
    await embedCalibration(fwd, rt, cfg, calib, X, batches, read, hooks.signal);
    for (let b = 0; b < cfg.numLayers; b++) {
      const w = await loadBlockWeights(cfg, b, read);
      wT = await rt.scoped('weights', () => fwd.weightTensors(w, b));
      const lins = blockLinears(cfg, b);
      const keys = [...new Set(lins.map((l) => statKey(l)))];
      const sparse = lins.some((l) => l.expert !== undefined);
      const nbG = Math.min(GAIN_WINDOWS, N);
      const gainRaw = await blockGainsRaw(fwd, gather(X, 0, nbG), nbG, T, w, wT, b, lins, suffixOf, params.config.seed);
      const passes = passesOf(keys, (k) => statWidth(cfg, lins, k), plan.passFloat32Bytes);
      for (const pass of passes) {
        const req: StatRequest = sparse ? ['routing', ...pass] : pass;
        const xOf = (k: number) => gather(X, batches[k][0], batches[k][1]);
        const { stats } = await passStats(fwd, rt, xOf, batches, wT, b, req, hooks, N, T, sums);
        progress.advance(units(b) / 2 / passes.length, `block ${b}: float statistics of ${pass.length > 3 ? `${pass.length} inputs` : pass.join(', ')}`, { block: b });
        for (const lin of lins) {
          const st = stats.get(statKey(lin));
          if (!st) continue;
          if (!allFinite(st.H))
            throw new ProtocolError(
              ErrorCode.NonFinite,
              `block ${b}: non-finite activations at ${statKey(lin)}`,
              lin.name,
              'the model produces inf/NaN on the calibration text (check the weights)',
            );
          throwIfCancelled(hooks.signal);
          const lc = layerConfigFor(params.config, lin.name);
          const measured = await measureLayer(
            backend,
            { name: lin.name, block: b, module: lin.module, rows: lin.rows, cols: lin.cols, W: w[suffixOf(lin)], H: st.H, H32: st.H32, absMean: st.absMean },
            lc,
            params.config.seed,
          );
          let tr = 0;
          for (let j = 0; j < lin.cols; j++) tr += st.H[j * lin.cols + j];
          const m: LayerMeasurement = { ...measured, gain: gainOf(gainRaw, lin, tr, nbG), streamEnergy: gainRaw.streamEnergy };
          out.push(m);
          progress.advance(lin.rows * lin.cols * 1.5, `block ${b} ${lin.module}: ${m.candidates.length} candidates on ${m.sampledRows} of ${lin.rows} rows`, {
            block: b,
            layer: lin.name,
          });
          await yieldToEventLoop();
        }
      }
      const Y = createActivationStore(N, recordLen, budget, join(scratch, `measure-${b + 1}.f32`));
      try {
        for (const [i0, nb] of batches) {
          throwIfCancelled(hooks.signal);
          scatter(Y, i0, nb, (await fwd.block(gather(X, i0, nb), nb, wT, b)).y);
          await yieldToEventLoop();
        }
      } catch (e) {
        Y.dispose();
        throw e;
      } finally {
        fwd.release(wT);
        wT = {};
      }
      X.dispose();
      X = Y;
    }
  } finally {
    X.dispose();
    fwd.release(wT);
    fwd.dispose();
  }
  // Block order, then the family's linear order (the order the run quantizes in).
  const order = new Map<string, number>();
  for (let b = 0; b < cfg.numLayers; b++) for (const l of blockLinears(cfg, b)) order.set(l.name, order.size);
  out.sort((a, c) => order.get(a.name)! - order.get(c.name)!);
  progress.end(`measured ${out.length} layers`);
  return out;
}
