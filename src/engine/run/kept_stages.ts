// A dense block's statistics passes on a GPU EP without recomputing the block from its input every time: each pass
// keeps on the device what the next one starts from (llama_graph.ts KeptStage) — the attention output, then
// h1 = x + o_proj(attention), then the SwiGLU activation — so the mlp_act pass no longer runs the attention and
// q/k/v/o again, and the output pass only down_proj. Per calibration batch, released as soon as no later pass reads it.

import type * as ort from 'onnxruntime-node';
import type { ComputeRuntime } from '../compute/runtime';
import type { ModelConfig } from '../model/config';
import type { BlockTensors, LlamaForward, PassTensors } from '../model/llama_forward';
import { KEPT_OF_STAGE, STAGE_INPUTS, type KeptStage } from '../model/llama_graph';
import type { RunContext } from './run_context';
import { finishOnDevice, isCancel, releasePass, sumOverBatches, type PassResult } from './stat_passes';

type KeptName = 'attn_out' | 'h1' | 'act';

/** The statistics stages that start from kept values (attn_in is a norm of x: nothing to keep from before it). */
export type KeptStatStage = Exclude<KeptStage, 'out'>;

/** Which stage a statistics pass over `req` is, when it is one of a dense block's kept stages. */
export function keptStageOf(req: readonly string[]): KeptStatStage | null {
  return req.length === 1 && (req[0] === 'attn_out' || req[0] === 'mlp_in' || req[0] === 'mlp_act') ? req[0] : null;
}

/** Device bytes the kept values of one calibration row take at most at once (h1 and the activation). */
export function keptBytesPerRow(cfg: ModelConfig): number {
  return 4 * (cfg.hiddenSize + Math.max(cfg.intermediateSize, cfg.numHeads * cfg.headDim));
}

/** One block's kept values, per batch. `off` once the device refused one: every pass then runs from x. */
export class KeptIntermediates {
  private readonly kept = new Map<KeptName, ort.Tensor[]>();
  off = false;
  constructor(private readonly rt: ComputeRuntime) {}

  /** What stage `stage` is fed (by graph input name), or null where it is not kept. */
  given(stage: KeptStage, k: number): Record<string, ort.Tensor> | null {
    if (this.off) return null;
    const out: Record<string, ort.Tensor> = {};
    for (const n of STAGE_INPUTS[stage]) {
      const t = this.kept.get(n)?.[k];
      if (!t) return null;
      out[n] = t;
    }
    return out;
  }

  set(name: KeptName, ts: ort.Tensor[]): void {
    this.drop(name);
    this.kept.set(name, ts);
  }

  drop(...names: KeptName[]): void {
    for (const n of names) {
      this.rt.release(...(this.kept.get(n) ?? []));
      this.kept.delete(n);
    }
  }

  /** Frees everything kept (end of the block, or a refusal). */
  dispose(): void {
    this.drop(...this.kept.keys());
  }
}

/**
 * Stage `stage`'s statistics pass from the values kept before it, keeping the one it makes for the next stage. Null,
 * warned once, where the device refuses (no EP reports free memory: a full device is found here): everything kept is
 * freed and the caller runs this pass, and every later one, from x.
 */
export async function keptStagePass(
  fwd: LlamaForward,
  rt: ComputeRuntime,
  stage: KeptStatStage,
  xs: readonly ort.Tensor[],
  batches: readonly [number, number][],
  wT: Record<string, ort.Tensor> | BlockTensors,
  b: number,
  kept: KeptIntermediates,
  hooks: RunContext['hooks'],
  N: number,
  T: number,
): Promise<PassResult | null> {
  if (!batches.every((_, k) => kept.given(stage, k))) return null;
  const made: ort.Tensor[] = [];
  const rowBytes = keptBytesPerRow(fwd.cfg) * T;
  let acc: PassTensors | undefined;
  try {
    acc = await rt.scoped('intermediates', () =>
      sumOverBatches(rt, batches, hooks, async (k, a) => {
        rt.claimDevice(batches[k][1] * rowBytes);
        const r = await fwd.stage(stage, xs[k], kept.given(stage, k)!, wT, b, a);
        made.push(r.kept);
        return r.stats!;
      }),
    );
    const res = await rt.scoped('hessians', () => finishOnDevice(rt, acc!, N, T));
    kept.set(KEPT_OF_STAGE[stage], made);
    if (stage === 'mlp_in') kept.drop('attn_out'); // o_proj is quantized: only h1 is read from here on
    return res;
  } catch (e) {
    rt.release(...made);
    if (isCancel(e, hooks)) throw e;
    kept.dispose();
    kept.off = true;
    hooks.log(
      'warn',
      `keeping block ${b}'s intermediates on the ${rt.ep} device failed (${e instanceof Error ? e.message.split('\n')[0] : String(e)}); each pass computes the block from its input`,
    );
    return null;
  } finally {
    if (acc) releasePass(rt, acc);
  }
}

/** Block b's output for batch k from the kept h1 and activation (only down_proj and the residual), or null. */
export async function keptOutput(
  fwd: LlamaForward,
  x: ort.Tensor,
  wT: Record<string, ort.Tensor> | BlockTensors,
  b: number,
  kept: KeptIntermediates,
  k: number,
): Promise<ort.Tensor | null> {
  const given = kept.given('out', k);
  return given ? (await fwd.stage('out', x, given, wT, b)).kept : null;
}
