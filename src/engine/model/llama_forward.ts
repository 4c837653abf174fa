// Runs the graphs of llama_graph.ts on the runtime's EP: one cached session per graph kind
// (embed, block kind × capture, head), batches of windows per run, weights fed as tensors over the
// caller's Float32Arrays (no copy on the CPU EP). The *Tensor methods chain blocks without host
// round trips: on WebGPU, weights are uploaded once per block and hidden states stay on the GPU.

import * as ort from 'onnxruntime-node';
import type { ComputeRuntime, OutputPlacement } from '../compute/runtime';
import { ErrorCode } from '../../protocol/messages';
import { ProtocolError } from '../../protocol/rpc';
import { blockKind, blockKindKey, blockLinears, expectedShapes, headTensorName, statWidth, type ModelConfig, type StatKey } from './config';
import { GraphBuilder } from '../compute/graph';
import {
  accStatsCapture,
  blockTensorSuffixes,
  buildBlockGraph,
  buildStageGraph,
  KEPT_OF_STAGE,
  type KeptStage,
  XTX_PART_BYTES,
  xtxName,
  xtxParts,
  buildEmbedGraph,
  buildHeadGraph,
  statsCapture,
  type Capture,
  type StatRequest,
  type WeightLayout,
} from './llama_graph';

/** Tensor name → float32 values (row-major, checkpoint layout). May be async (lazy disk reads). */
export type WeightsProvider = (name: string) => Float32Array | Promise<Float32Array>;

/** One block's tensors keyed by checkpoint suffix (`self_attn.q_proj.weight`, ...). */
export type BlockWeights = Record<string, Float32Array>;

export async function loadBlockWeights(cfg: ModelConfig, b: number, weights: WeightsProvider): Promise<BlockWeights> {
  const out: BlockWeights = {};
  const shapes = expectedShapes(cfg, b);
  for (const s of blockTensorSuffixes(cfg, b)) {
    const name = `model.layers.${b}.${s}`;
    out[s] = await weights(name);
    checkWeights(out[s], name, shapes.get(name), cfg);
  }
  return out;
}

/**
 * Size and finiteness of a tensor about to enter a graph. Callers that skipped checkModelTensors
 * (an evaluator on a raw folder) would otherwise hand ORT a wrong-sized buffer: a raw ORT error,
 * or a broadcast that silently computes garbage.
 */
export function checkWeights(vals: Float32Array, name: string, shape: readonly number[] | undefined, cfg: ModelConfig): void {
  if (shape) {
    const want = shape.reduce((a, d) => a * d, 1);
    if (vals.length !== want)
      throw new ProtocolError(ErrorCode.ShapeMismatch, `tensor ${name} has ${vals.length} values, config ${cfg.source} implies [${shape.join(', ')}] = ${want}`, name);
  }
  assertFiniteWeights(vals, name);
}

/**
 * A NaN/Inf weight would surface later as "non-finite activations" of some other layer, or (in a
 * norm or a linear that RTN never multiplies) not at all: refuse it here, naming the tensor.
 */
export function assertFiniteWeights(vals: Float32Array, name: string): void {
  for (let i = 0; i < vals.length; i++) {
    if (!Number.isFinite(vals[i]))
      throw new ProtocolError(
        ErrorCode.NonFinite,
        `tensor ${name} contains a non-finite value (${vals[i]}) at flat index ${i}`,
        name,
        'the checkpoint contains NaN/Inf weights: check the source file',
      );
  }
}

/** Embedding matrices already checked (the pipeline passes the same array for every batch). */
const checkedEmbeddings = new WeakSet<Float32Array>();

export interface BlockStats {
  /** XᵀX summed over the batch's rows, [n, n] row-major. */
  xtx: Float32Array;
  /** Σ_t |x_tj|, [n]. */
  absSum: Float32Array;
}

/** A statistics pass's results on the host: per key XᵀX and Σ|x|; `routed` = rows routed to each expert. */
export interface PassStats32 {
  stats: Map<StatKey, BlockStats>;
  routed?: Float32Array;
}

/** The same as tensors (GPU EP: running sums that never leave the device between batches). */
export interface PassTensors {
  /** xtx: XᵀX whole, or in row parts (an n×n too wide for one GPU binding; llama_graph.ts xtxParts). */
  stats: Map<StatKey, { xtx: ort.Tensor[]; absSum: ort.Tensor }>;
  routed?: ort.Tensor;
}

export interface BlockResult {
  /** New hidden states [B, T, H]. */
  y: Float32Array;
  /** capture 'activations': the linear inputs by statistic key, [B·T, n] each. */
  activations?: Map<StatKey, Float32Array>;
  /** capture 'stats'. */
  stats?: Map<StatKey, BlockStats>;
}

/** Key k's XᵀX outputs: the whole, or its row parts in order (llama_graph.ts xtxParts). */
function xtxOutputs(out: Record<string, ort.Tensor>, k: StatKey): ort.Tensor[] {
  const whole = out[xtxName(k, 0, 1)];
  if (whole) return [whole];
  const parts: ort.Tensor[] = [];
  for (let p = 0; out[xtxName(k, p, 2)]; p++) parts.push(out[xtxName(k, p, 2)]);
  return parts;
}

function hostStats(out: Record<string, ort.Tensor>, k: StatKey): BlockStats {
  const parts = xtxOutputs(out, k);
  let xtx = parts[0].data as Float32Array;
  if (parts.length > 1) {
    xtx = new Float32Array(parts.reduce((s, t) => s + t.size, 0));
    let o = 0;
    for (const t of parts) {
      xtx.set(t.data as Float32Array, o);
      o += t.size;
    }
  }
  return { xtx, absSum: out[`${k}_abssum`].data as Float32Array };
}

function passTensors(out: Record<string, ort.Tensor>, req: StatRequest): PassTensors {
  const stats = new Map<StatKey, { xtx: ort.Tensor[]; absSum: ort.Tensor }>();
  for (const k of req) if (k !== 'routing') stats.set(k, { xtx: xtxOutputs(out, k), absSum: out[`${k}_abssum`] });
  return { stats, routed: out.routing_count };
}

function isTensor(t: unknown): t is ort.Tensor {
  return t instanceof ort.Tensor;
}

/** A block's weights as the forwards take them: host values, device tensors, or uploaded as the graphs read them. */
export type BlockInputs = BlockWeights | Record<string, ort.Tensor> | BlockTensors;

/** The weights session `s` reads: all of a tensor record (run() feeds only what a session declares), or uploaded on demand. */
async function weightFeeds(wT: Record<string, ort.Tensor> | BlockTensors, s: ort.InferenceSession): Promise<Record<string, ort.Tensor>> {
  return wT instanceof BlockTensors ? wT.feeds(s.inputNames) : wT;
}

function isTensorRecord(w: BlockWeights | Record<string, ort.Tensor>): w is Record<string, ort.Tensor> {
  return isTensor(Object.values(w)[0]);
}

export class LlamaForward {
  private readonly key: string;
  /** Per block tensor suffix: a linear's [rows, cols] (transposed under 'in_out'), or null for one fed as stored (norms, biases, routers). */
  private readonly linearShapes = new Map<string, [number, number]>();
  /** Linear weights as the block graphs take them: pre-transposed on a GPU that keeps data (see WeightLayout). */
  readonly layout: WeightLayout;
  /** The statistics graphs' ones row [1, B·T], per B·T (on the device where the EP keeps data). */
  private readonly ones = new Map<number, Promise<ort.Tensor>>();

  constructor(
    readonly cfg: ModelConfig,
    /** Window length T baked into the block graphs (rope tables). */
    readonly ctx: number,
    readonly rt: ComputeRuntime,
    /** Default: 'in_out' where the EP keeps data on the device (weights transposed there once), else 'out_in'. */
    layout?: WeightLayout,
    /** XᵀX wider than this comes out in row parts (llama_graph.ts XTX_PART_BYTES; tests lower it). */
    private readonly xtxPartBytes = XTX_PART_BYTES,
  ) {
    const { source: _source, ...shapeFields } = cfg;
    this.layout = layout ?? (rt.keepsDataOnDevice ? 'in_out' : 'out_in');
    this.key = `llama:${JSON.stringify(shapeFields)}:T${ctx}:${this.layout}:xtx${xtxPartBytes}`;
    for (let b = 0; b < cfg.numLayers; b++) {
      const p = `model.layers.${b}.`;
      for (const l of blockLinears(cfg, b)) this.linearShapes.set(l.weight.slice(p.length), [l.rows, l.cols]);
      if (!cfg.moe) break; // every dense block has the same tensors
    }
  }

  /** The cache key of block b's graphs (blocks of one kind share them). */
  private blockKey(b: number): string {
    return `${this.key}:block:${blockKindKey(blockKind(this.cfg, b))}`;
  }

  /** Where chained outputs live: on the GPU for WebGPU (gpu-buffer), else on the host. */
  private get placement(): 'device' | 'host' {
    return this.rt.keepsDataOnDevice ? 'device' : 'host';
  }

  /** ids [B, T] → x [B, T, H]. */
  async embed(ids: Int32Array, B: number, embedW: Float32Array): Promise<Float32Array> {
    if (!checkedEmbeddings.has(embedW)) {
      checkWeights(embedW, 'model.embed_tokens.weight', [this.cfg.vocabSize, this.cfg.hiddenSize], this.cfg);
      checkedEmbeddings.add(embedW);
    }
    const t = await this.embedTensor(ids, B, this.rt.host(embedW, [this.cfg.vocabSize, this.cfg.hiddenSize]), 'host');
    return t.data as Float32Array;
  }

  /** Embedding with tensors in and out (the output stays on the device when the EP allows). */
  async embedTensor(ids: Int32Array, B: number, embedW: ort.Tensor, placement = this.placement): Promise<ort.Tensor> {
    const T = ids.length / B;
    const s = await this.rt.session(`${this.key}:embed`, () => buildEmbedGraph(this.cfg), placement);
    const out = await this.rt.run(s, { embed: embedW, ids: new ort.Tensor('int32', ids, [B, T]) });
    return out.x;
  }

  /** A block's weights as tensors: uploaded once to the device (WebGPU), zero-copy on the CPU EP. */
  async weightTensors(w: BlockWeights, b: number): Promise<Record<string, ort.Tensor>> {
    const out: Record<string, ort.Tensor> = {};
    for (const name of blockTensorSuffixes(this.cfg, b)) {
      const v = w[name];
      if (!v) throw new Error(`block weights: ${name} missing`);
      out[name] = await this.weightTensor(name, v);
    }
    return out;
  }

  /**
   * One block tensor by suffix, as the block graphs take it: uploaded (GPU), and for a linear under the
   * 'in_out' layout transposed once on the device. Lets the pipeline replace just the layers it quantized.
   */
  async weightTensor(name: string, v: Float32Array): Promise<ort.Tensor> {
    const lin = this.linearShapes.get(name);
    if (lin) return this.matrixTensor(v, lin[0], lin[1]);
    // Norms and biases are vectors; a router [E, H] or shared-expert gate [1, H] is fed as stored (Gemm transB).
    const shape = name.endsWith('norm.weight') || name.endsWith('bias') ? [v.length] : [v.length / this.cfg.hiddenSize, this.cfg.hiddenSize];
    return this.rt.upload(this.rt.host(v, shape));
  }

  /** A [rows, cols] weight (checkpoint layout) uploaded, and transposed once on the device under 'in_out'. */
  private async matrixTensor(v: Float32Array, rows: number, cols: number): Promise<ort.Tensor> {
    const t = await this.rt.upload(this.rt.host(v, [rows, cols]));
    if (this.layout === 'out_in') return t;
    const s = await this.rt.session('transpose2d', transposeModel, this.placement);
    try {
      return (await this.rt.run(s, { x: t })).y;
    } finally {
      this.rt.release(t);
    }
  }

  /** The ones row fed to statistics graphs for B·T rows. */
  private onesRow(rows: number): Promise<ort.Tensor> {
    let t = this.ones.get(rows);
    if (!t) this.ones.set(rows, (t = this.rt.upload(this.rt.host(new Float32Array(rows).fill(1), [1, rows]))));
    return t;
  }

  /** Frees device copies made by weightTensors / the *Tensor methods (no-op on the host). */
  release(...ts: (ort.Tensor | Record<string, ort.Tensor> | undefined)[]): void {
    for (const t of ts) {
      if (!t) continue;
      if (isTensor(t)) this.rt.release(t);
      else this.rt.release(...Object.values(t));
    }
  }

  /** Decoder block b on x [B, ctx, H] with the given weights. */
  async block(x: Float32Array, B: number, w: BlockInputs, b: number, capture: Capture = 'none'): Promise<BlockResult> {
    const wT = w instanceof BlockTensors || isTensorRecord(w) ? w : await this.weightTensors(w, b);
    const out = await this.runBlock(this.rt.host(x, [B, this.ctx, this.cfg.hiddenSize]), wT, b, capture, 'host');
    const res: BlockResult = { y: out.y.data as Float32Array };
    const keys = Object.keys(out)
      .filter((k) => k.endsWith('_abssum'))
      .map((k) => k.slice(0, -'_abssum'.length) as StatKey);
    if (capture === 'activations')
      res.activations = new Map(
        Object.keys(out)
          .filter((k) => k !== 'y')
          .map((k) => [k as StatKey, out[k].data as Float32Array]),
      );
    if (capture === 'stats') res.stats = new Map(keys.map((k) => [k, hostStats(out, k)]));
    return res;
  }

  /**
   * XᵀX and Σ|x| of some inputs of block b over the batch (and with `routing` the rows routed to each expert),
   * computing the block only as far as those inputs (no y): a quarter to a half of a full 'stats' pass.
   */
  async blockStats(x: Float32Array, B: number, w: BlockInputs, b: number, req: StatRequest): Promise<PassStats32> {
    const wT = w instanceof BlockTensors || isTensorRecord(w) ? w : await this.weightTensors(w, b);
    const out = await this.runBlock(this.rt.host(x, [B, this.ctx, this.cfg.hiddenSize]), wT, b, statsCapture(req), 'host');
    const keys = req.filter((k): k is StatKey => k !== 'routing');
    return { stats: new Map(keys.map((k) => [k, hostStats(out, k)])), routed: out.routing_count?.data as Float32Array | undefined };
  }

  /** blockStats with its outputs where the EP keeps data (the first batch of a device-summed pass). */
  async blockStatsTensor(x: Float32Array | ort.Tensor, B: number, wT: Record<string, ort.Tensor> | BlockTensors, b: number, req: StatRequest): Promise<PassTensors> {
    const out = await this.runBlock(this.asTensor(x, [B, this.ctx, this.cfg.hiddenSize]), wT, b, statsCapture(req), this.statsPlacement(b, req));
    return passTensors(out, req);
  }

  /**
   * blockStats added to running sums `acc` (device tensors on a GPU EP: the sums never leave the
   * device between batches). Returns the new sums; the caller releases the old ones.
   */
  async blockStatsAccumulate(
    x: Float32Array | ort.Tensor,
    B: number,
    wT: Record<string, ort.Tensor> | BlockTensors,
    b: number,
    req: StatRequest,
    acc: PassTensors,
  ): Promise<PassTensors> {
    const cfg = this.cfg,
      T = this.ctx;
    const capture = accStatsCapture(req);
    const kind = blockKind(cfg, b);
    const s = await this.rt.session(`${this.blockKey(b)}:${capture}`, () => buildBlockGraph(cfg, T, capture, this.layout, kind, this.xtxPartBytes), this.statsPlacement(b, req));
    const feeds: Record<string, ort.Tensor> = { x: this.asTensor(x, [B, T, cfg.hiddenSize]), ...(await weightFeeds(wT, s)), ones: await this.onesRow(B * T) };
    for (const [k, a] of acc.stats) {
      a.xtx.forEach((t, p) => (feeds[xtxName(k, p, a.xtx.length, 'acc_')] = t));
      feeds[`${k}_acc_abssum`] = a.absSum;
    }
    if (acc.routed) feeds.routing_acc_count = acc.routed;
    return passTensors(await this.rt.run(s, feeds), req);
  }

  /**
   * One stage of a dense block's statistics passes from the intermediates kept by the stage before (llama_graph.ts
   * KeptStage): `given` = those kept tensors by input name (attn_out, h1, act), `acc` = the running sums of the
   * pass (none for its first batch). Returns the stage's statistics (none for 'out') and what it keeps for the next
   * stage (y for 'out'), where the EP keeps data.
   */
  async stage(
    stage: KeptStage,
    x: ort.Tensor,
    given: Record<string, ort.Tensor>,
    wT: Record<string, ort.Tensor> | BlockTensors,
    b: number,
    acc?: PassTensors,
  ): Promise<{ stats?: PassTensors; kept: ort.Tensor }> {
    const cfg = this.cfg,
      T = this.ctx,
      kind = blockKind(cfg, b);
    const keepName = stage === 'out' ? 'y' : `keep_${KEPT_OF_STAGE[stage]}`;
    const placement: OutputPlacement =
      this.placement === 'host' ? 'host' : stage === 'out' ? 'device' : { ...(this.statsPlacement(b, [stage]) as Record<string, 'device'>), [keepName]: 'device' };
    const s = await this.rt.session(
      `${this.blockKey(b)}:stage:${stage}${acc ? ':acc' : ''}`,
      () => buildStageGraph(cfg, T, stage, !!acc, this.layout, kind, this.xtxPartBytes),
      placement,
    );
    const feeds: Record<string, ort.Tensor> = { x, ...given, ...(await weightFeeds(wT, s)) };
    if (stage !== 'out') feeds.ones = await this.onesRow(x.dims[0] * T);
    for (const [k, a] of acc?.stats ?? []) {
      a.xtx.forEach((t, p) => (feeds[xtxName(k, p, a.xtx.length, 'acc_')] = t));
      feeds[`${k}_acc_abssum`] = a.absSum;
    }
    const out = await this.rt.run(s, feeds);
    return { kept: out[keepName], ...(stage === 'out' ? {} : { stats: passTensors(out, [stage]) }) };
  }

  /** Block b, tensors in and out: y stays on the device when the EP allows (no host round trip). */
  async blockTensor(x: ort.Tensor, wT: Record<string, ort.Tensor> | BlockTensors, b: number): Promise<ort.Tensor> {
    return (await this.runBlock(x, wT, b, 'none', this.placement)).y;
  }

  /**
   * Where a device-summed statistics pass puts its outputs: the XᵀX sums on the device, Σ|x| and the routing
   * counts (a few KB) on the host. Reading those back at every batch makes ORT wait for the GPU, which is when the
   * earlier batches' sums are freed: with every output on the device they all stay allocated, and a wide input's
   * sums (XᵀX is n² floats per batch) fill the GPU within one pass.
   */
  private statsPlacement(b: number, req: StatRequest): OutputPlacement {
    if (this.placement === 'host') return 'host';
    const lins = blockLinears(this.cfg, b);
    const out: Record<string, 'device'> = {};
    for (const k of req) {
      if (k === 'routing') continue;
      const P = xtxParts(statWidth(this.cfg, lins, k), this.xtxPartBytes).length;
      for (let p = 0; p < P; p++) out[xtxName(k, p, P)] = 'device';
    }
    return out;
  }

  private async runBlock(
    x: ort.Tensor,
    wT: Record<string, ort.Tensor> | BlockTensors,
    b: number,
    capture: Capture,
    placement: OutputPlacement,
  ): Promise<Record<string, ort.Tensor>> {
    const cfg = this.cfg,
      T = this.ctx,
      kind = blockKind(cfg, b);
    const s = await this.rt.session(`${this.blockKey(b)}:${capture}`, () => buildBlockGraph(cfg, T, capture, this.layout, kind, this.xtxPartBytes), placement);
    const feeds: Record<string, ort.Tensor> = { x, ...(await weightFeeds(wT, s)) };
    if (capture.includes('stats')) feeds.ones = await this.onesRow(x.dims[0] * T);
    return this.rt.run(s, feeds);
  }

  /** Frees the cached ones rows (device memory on a GPU EP). */
  dispose(): void {
    for (const t of this.ones.values()) void t.then((v) => this.rt.release(v)).catch(() => undefined);
    this.ones.clear();
  }

  /**
   * The LM head [V, H] as headNll takes it: uploaded, and under the 'in_out' layout transposed once on the
   * device (the head is the largest product of an evaluation; Gemm transB would run it at a third of the speed).
   */
  headTensor(head: Float32Array): Promise<ort.Tensor> {
    return this.matrixTensor(head, this.cfg.vocabSize, this.cfg.hiddenSize);
  }

  /**
   * Per-position NLL [B, T−1] of ids[:, 1:] given x [B, T, H] (final norm + head + NLL in-graph). `headW`: the
   * checkpoint's [V, H] values, or a tensor from headTensor().
   */
  async headNll(x: Float32Array | ort.Tensor, B: number, ids: Int32Array, normW: Float32Array | ort.Tensor, headW: Float32Array | ort.Tensor): Promise<Float32Array> {
    const T = ids.length / B,
      cfg = this.cfg;
    const targets = new Int32Array(B * (T - 1));
    for (let b = 0; b < B; b++) targets.set(ids.subarray(b * T + 1, (b + 1) * T), b * (T - 1));
    const s = await this.rt.session(`${this.key}:head:nll`, () => buildHeadGraph(cfg, 'nll', this.layout));
    const head = headW instanceof Float32Array ? await this.headTensor(headW) : headW;
    try {
      const out = await this.rt.run(s, {
        x: this.asTensor(x, [B, T, cfg.hiddenSize]),
        norm: this.asTensor(normW, [cfg.hiddenSize]),
        head,
        targets: new ort.Tensor('int32', targets, [B, T - 1]),
      });
      return out.nll.data as Float32Array;
    } finally {
      if (head !== headW) this.rt.release(head);
    }
  }

  /** Logits [B, T, V] (for tests and exports; perplexity uses headNll). */
  async headLogits(x: Float32Array, B: number, T: number, normW: Float32Array, headW: Float32Array): Promise<Float32Array> {
    const cfg = this.cfg;
    const s = await this.rt.session(`${this.key}:head:logits`, () => buildHeadGraph(cfg, 'logits'));
    const out = await this.rt.run(s, {
      x: this.rt.host(x, [B, T, cfg.hiddenSize]),
      norm: this.rt.host(normW, [cfg.hiddenSize]),
      head: this.rt.host(headW, [cfg.vocabSize, cfg.hiddenSize]),
    });
    return out.logits.data as Float32Array;
  }

  /** Head tensors from the provider (tied head → the embedding). */
  /**
   * Per predicted position of B windows: the NLL of the next token under this model (x) and the KL divergence
   * of this model's next-token distribution from a reference's (x_ref, with its own norm and head).
   */
  async headNllKl(
    x: ort.Tensor,
    xRef: ort.Tensor,
    B: number,
    ids: Int32Array,
    w: { norm: ort.Tensor; head: ort.Tensor; normRef: ort.Tensor; headRef: ort.Tensor },
  ): Promise<{ nll: Float32Array; kl: Float32Array }> {
    const T = ids.length / B;
    const targets = new Int32Array(B * (T - 1));
    for (let b = 0; b < B; b++) targets.set(ids.subarray(b * T + 1, (b + 1) * T), b * (T - 1));
    const s = await this.rt.session(`${this.key}:head:nll_kl`, () => buildHeadGraph(this.cfg, 'nll_kl', this.layout));
    const out = await this.rt.run(s, {
      x,
      x_ref: xRef,
      norm: w.norm,
      head: w.head,
      norm_ref: w.normRef,
      head_ref: w.headRef,
      targets: new ort.Tensor('int32', targets, [B, T - 1]),
    });
    return { nll: out.nll.data as Float32Array, kl: out.kl.data as Float32Array };
  }

  async headWeights(weights: WeightsProvider): Promise<{ norm: Float32Array; head: Float32Array }> {
    const c = this.cfg;
    const norm = await weights('model.norm.weight'),
      head = await weights(headTensorName(c));
    checkWeights(norm, 'model.norm.weight', [c.hiddenSize], c);
    checkWeights(head, headTensorName(c), [c.vocabSize, c.hiddenSize], c);
    return { norm, head };
  }

  private asTensor(v: Float32Array | ort.Tensor, dims: number[]): ort.Tensor {
    return v instanceof Float32Array ? this.rt.host(v, dims) : v;
  }
}

/** y = xᵀ for a 2-D x (the 'in_out' weight layout, made once per upload on the device). */
function transposeModel(): Uint8Array {
  const g = new GraphBuilder('transpose2d');
  g.output(g.op('Transpose', [g.input('x', 'float32', ['r', 'c'])], { perm: [1, 0] }), 'y');
  return g.toModel();
}

/**
 * A block's tensors as its graphs take them, each uploaded (GPU EP) when a graph first reads it. The pipeline
 * replaces every linear by its quantized Ŵ before a pass reads it, so each weight crosses to the device once per
 * block, as Ŵ, never also as the float original; norms, biases and routers go up when the first pass needs them.
 */
export class BlockTensors {
  private readonly dev = new Map<string, Promise<ort.Tensor>>();
  constructor(
    private readonly fwd: LlamaForward,
    private readonly rt: ComputeRuntime,
    /** The host values by suffix; set() replaces entries of this record. */
    readonly host: BlockWeights,
  ) {}

  /** The tensors among `names` that are block tensors, uploaded if they are not on the device yet. */
  async feeds(names: readonly string[]): Promise<Record<string, ort.Tensor>> {
    const out: Record<string, ort.Tensor> = {};
    for (const n of names) {
      if (!(n in this.host)) continue;
      let t = this.dev.get(n);
      if (!t) {
        const v = this.host[n];
        this.dev.set(n, (t = this.rt.scoped('weights', () => this.fwd.weightTensor(n, v))));
        t.catch(() => this.dev.delete(n));
      }
      out[n] = await t;
    }
    return out;
  }

  /** Replaces tensor `name` (a quantized layer's Ŵ): its device copy is freed; the new values go up when read. */
  async set(name: string, v: Float32Array): Promise<void> {
    this.host[name] = v;
    const t = this.dev.get(name);
    this.dev.delete(name);
    if (t) this.rt.release(await t);
  }

  /** Frees every device copy (the host values stay). */
  async release(): Promise<void> {
    const ts = [...this.dev.values()];
    this.dev.clear();
    for (const t of await Promise.allSettled(ts)) if (t.status === 'fulfilled') this.rt.release(t.value);
  }
}
