// One statistics pass of the block-by-block pipeline: the block (as quantized so far) run over every calibration
// batch, its inputs' XᵀX and Σ|x| summed — on the device while the EP takes it, else on the host — and finished into
// H = (2/N)·Σ XᵀX (exactly symmetric) and mean|x|.

import type * as ort from 'onnxruntime-node';
import { ErrorCode } from '../../protocol/messages';
import { ProtocolError } from '../../protocol/rpc';
import type { ComputeRuntime } from '../compute/runtime';
import { GraphBuilder } from '../compute/graph';
import { parseStatKey, type StatKey } from '../model/config';
import type { BlockTensors, LlamaForward, PassTensors } from '../model/llama_forward';
import type { StatRequest } from '../model/llama_graph';
import { throwIfCancelled, yieldToEventLoop } from './cancel';
import type { RunContext } from './run_context';

/** One pass's statistics: H (float64 for the layers, its float32 copy for the cache and the GPU backend) and mean|x|. */
export interface PassStats {
  /** H: the float64 host sums' (host path), or the device's float32 H itself (no float64 copy of n² values). */
  H: Float64Array | Float32Array;
  H32: Float32Array;
  absMean: Float64Array;
}

/**
 * H = (2/N)·Σ XᵀX (GPTQ add_batch's running average, N = calibration sequences; an expert's sum runs over its
 * routed rows only, so its proxy loss is its share of the block's) made exactly symmetric, and mean|x| over
 * `rows` rows, from host sums (taken over: H is the sums' array, rescaled).
 */
function statsFromHostSums(xtx: Float64Array, absSum: Float64Array, n: number, N: number, rows: number): PassStats {
  const H = xtx; // in place: the sums are not needed after this (a 70B down_proj's are 6.6 GB)
  for (let k = 0; k < H.length; k++) H[k] *= 2 / N;
  for (let i = 0; i < n; i++) for (let j = i + 1; j < n; j++) H[j * n + i] = H[i * n + j] = (H[i * n + j] + H[j * n + i]) / 2; // exact symmetry
  return { H, H32: Float32Array.from(H), absMean: absSum.map((v) => (rows > 0 ? v / rows : 0)) };
}

/**
 * statsFromHostSums on the device: h = (xtx + xtxᵀ)·inv_n (exactly symmetric: float addition commutes), abs_mean =
 * abssum·inv_nt. XᵀX in row parts [r0, r1) (too wide for one GPU binding) comes in and goes out in the same parts:
 * part q's transpose is the column slice [r0_q, r1_q) of every part, transposed and joined.
 */
function hessianFinalizeModel(parts: readonly [number, number][]): Uint8Array {
  const g = new GraphBuilder('hessian_finalize');
  const invN = g.input('inv_n', 'float32', [1]);
  const P = parts.length;
  const x = parts.map(([r0, r1], p) => g.input(partName('xtx', p, P), 'float32', [r1 - r0, 'n']));
  parts.forEach(([r0, r1], q) => {
    const t =
      P === 1
        ? g.op('Transpose', [x[0]], { perm: [1, 0] })
        : g.op(
            'Concat',
            x.map((xp) => g.op('Transpose', [g.op('Slice', [xp, g.constI64([r0]), g.constI64([r1]), g.constI64([1])])], { perm: [1, 0] })),
            { axis: 1 },
          );
    g.output(g.op('Mul', [g.op('Add', [x[q], t]), invN]), partName('h', q, P));
  });
  g.output(g.op('Mul', [g.input('abssum', 'float32', ['n']), g.input('inv_nt', 'float32', [1])]), 'abs_mean');
  return g.toModel();
}

/** A finalize graph's tensor: `base`, or part p of `base` in row parts. */
const partName = (base: string, p: number, parts: number) => (parts === 1 ? base : `${base}.${p}`);

/** The row ranges of XᵀX's parts as the graph emitted them. */
function xtxPartsOf(xtx: readonly ort.Tensor[]): [number, number][] {
  let r = 0;
  return xtx.map((t) => [r, (r += t.dims[0])]);
}

/** One statistics pass's results: per key H and mean|x|, and the rows routed to each expert (sparse blocks). */
export interface PassResult {
  stats: Map<StatKey, PassStats>;
  routed?: Float64Array;
}

/** Rows a statistic's mean|x| averages over: every calibration row, or the rows routed to its expert. */
function rowsOf(k: StatKey, routed: Float64Array | undefined, N: number, T: number): number {
  const { expert, allTokens } = parseStatKey(k);
  return expert === undefined || allTokens ? N * T : (routed?.[expert] ?? 0);
}

/** Frees a pass's device tensors (running sums). */
export function releasePass(rt: ComputeRuntime, p: PassTensors): void {
  for (const t of p.stats.values()) rt.release(...t.xtx, t.absSum);
  if (p.routed) rt.release(p.routed);
}

/**
 * A pass's running sums over the batches, kept where `runBatch` leaves them: batch k's statistics added to the sums of
 * the batches before (`acc`, none for the first: no n×n zeros uploaded, 485 MB for a 7B down_proj input). The caller
 * releases the returned sums.
 */
export async function sumOverBatches(
  rt: ComputeRuntime,
  batches: readonly [number, number][],
  hooks: RunContext['hooks'],
  runBatch: (k: number, acc: PassTensors | undefined) => Promise<PassTensors>,
): Promise<PassTensors> {
  let acc: PassTensors | undefined;
  try {
    for (let k = 0; k < batches.length; k++) {
      throwIfCancelled(hooks.signal);
      const next = await runBatch(k, acc);
      if (acc) releasePass(rt, acc);
      acc = next;
      await yieldToEventLoop();
    }
  } catch (e) {
    if (acc) releasePass(rt, acc);
    throw e;
  }
  return acc!;
}

/**
 * H = (2/N)·(XᵀX + (XᵀX)ᵀ)/2 and mean|x| from a pass's device sums, finished on the device too: the host gets the
 * finished float32 H (its float64 copy, symmetrisation and rescaling over n² values cost ~8 s per 7B block on the host).
 */
export async function finishOnDevice(rt: ComputeRuntime, acc: PassTensors, N: number, T: number): Promise<PassResult> {
  const routed = acc.routed ? Float64Array.from(await rt.download(acc.routed)) : undefined;
  const stats = new Map<StatKey, PassStats>();
  for (const [k, t] of acc.stats) {
    const rows = rowsOf(k, routed, N, T);
    const n = t.absSum.dims[0],
      parts = xtxPartsOf(t.xtx);
    const names = parts.map((_, q) => partName('h', q, parts.length));
    const s = await rt.session(`hessian/finalize:${JSON.stringify(parts)}`, () => hessianFinalizeModel(parts), {
      ...Object.fromEntries(names.map((h) => [h, 'device'])),
      abs_mean: 'host',
    });
    const feeds: Record<string, ort.Tensor> = { abssum: t.absSum, inv_n: rt.host(Float32Array.of(1 / N), [1]), inv_nt: rt.host(Float32Array.of(rows > 0 ? 1 / rows : 0), [1]) };
    t.xtx.forEach((x, p) => (feeds[partName('xtx', p, parts.length)] = x));
    const out = await rt.run(s, feeds);
    const H32 = new Float32Array(n * n);
    try {
      for (let q = 0; q < parts.length; q++) H32.set(await rt.download(out[names[q]]), parts[q][0] * n);
    } finally {
      rt.release(...names.map((h) => out[h]));
    }
    stats.set(k, { H: H32, H32, absMean: Float64Array.from(out.abs_mean.data as Float32Array) });
  }
  return { stats, routed };
}

/** A cancel, as opposed to a device that refused (whose callers fall back). */
export function isCancel(e: unknown, hooks: RunContext['hooks']): boolean {
  return !!hooks.signal?.aborted || (e instanceof ProtocolError && e.code === ErrorCode.Cancelled);
}

/** What one statistics pass runs: block b (weights wT) over the batches (inputs xOf), for the statistics req. */
interface PassInputs {
  fwd: LlamaForward;
  rt: ComputeRuntime;
  xOf: (k: number) => Float32Array | ort.Tensor;
  batches: [number, number][];
  wT: Record<string, ort.Tensor> | BlockTensors;
  b: number;
  req: StatRequest;
  hooks: RunContext['hooks'];
  N: number;
  T: number;
}

/**
 * One statistics pass with the running sums XᵀX and Σ|x| kept on the device (GPU EP), downloaded once
 * instead of once per batch: for a 7B down_proj input (n = 11008) that is one 485 MB copy instead of
 * sixteen, and no float64 host accumulation of 121 M values per batch. Float32 sums of the per-batch
 * products (each already a float32 sum over B·T rows). Null, with a warning, if the EP refuses it.
 */
async function statsOnDevice({ fwd, rt, xOf, batches, wT, b, req, hooks, N, T }: PassInputs): Promise<PassResult | null> {
  let acc: PassTensors | undefined;
  try {
    acc = await sumOverBatches(rt, batches, hooks, (k, a) =>
      a ? fwd.blockStatsAccumulate(xOf(k), batches[k][1], wT, b, req, a) : fwd.blockStatsTensor(xOf(k), batches[k][1], wT, b, req),
    );
    return await finishOnDevice(rt, acc, N, T);
  } catch (e) {
    if (isCancel(e, hooks)) throw e;
    hooks.log('warn', `Hessian sums on the ${rt.ep} device failed (${e instanceof Error ? e.message.split('\n')[0] : String(e)}); summing on the host`);
    return null;
  } finally {
    if (acc) releasePass(rt, acc);
  }
}

/** The same pass with the sums on the host (CPU EP, or a device that refused the sums). */
async function statsOnHost({ fwd, rt, xOf, batches, wT, b, req, hooks, N, T }: PassInputs): Promise<PassResult> {
  const sums = new Map<StatKey, { xtx: Float64Array; absSum: Float64Array }>();
  let routed: Float64Array | undefined;
  for (let k = 0; k < batches.length; k++) {
    throwIfCancelled(hooks.signal);
    const x = xOf(k);
    const r = await fwd.blockStats(x instanceof Float32Array ? x : await rt.download(x), batches[k][1], wT, b, req);
    for (const [k, st] of r.stats) {
      let a = sums.get(k);
      if (!a) sums.set(k, (a = { xtx: new Float64Array(st.xtx.length), absSum: new Float64Array(st.absSum.length) }));
      for (let q = 0; q < a.xtx.length; q++) a.xtx[q] += st.xtx[q];
      for (let q = 0; q < a.absSum.length; q++) a.absSum[q] += st.absSum[q];
    }
    if (r.routed) {
      routed ??= new Float64Array(r.routed.length);
      for (let e = 0; e < routed.length; e++) routed[e] += r.routed[e];
    }
    await yieldToEventLoop();
  }
  const stats = new Map<StatKey, PassStats>();
  for (const [k, a] of sums) stats.set(k, statsFromHostSums(a.xtx, a.absSum, a.absSum.length, N, rowsOf(k, routed, N, T)));
  return { stats, routed };
}

/**
 * One statistics pass, its sums on the device while the EP takes them (`sums.onDevice` turns false, warned, the
 * first time it does not: host sums from then on), else on the host.
 */
export async function passStats(
  fwd: LlamaForward,
  rt: ComputeRuntime,
  xOf: (k: number) => Float32Array | ort.Tensor,
  batches: [number, number][],
  wT: Record<string, ort.Tensor> | BlockTensors,
  b: number,
  req: StatRequest,
  hooks: RunContext['hooks'],
  N: number,
  T: number,
  sums: { onDevice: boolean },
): Promise<PassResult> {
  const p: PassInputs = { fwd, rt, xOf, batches, wT, b, req, hooks, N, T };
  const res = sums.onDevice ? await rt.scoped('hessians', () => statsOnDevice(p)) : null;
  if (res) return res;
  sums.onDevice = false;
  return statsOnHost(p);
}
