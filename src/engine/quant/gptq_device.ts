// GPTQ's lazy trailing updates on an ONNX Runtime device (driver around gptq.ts; the core is unchanged).
//
// The core only reads W through two windows after a lazy update at i2: the next block's columns
// [i2, i2+B) (W1) and, for dynamic groups, the group params' columns [k, k+G) for k in that block.
// So the whole W can live on the device and only that slab of B+G columns has to come back:
//   resident (WebGPU): W (float32) stays on the GPU, in
//     row chunks of ≤ 64 MiB; per block: upload Err1 (rows×B) and Hinv[i1:i2, :] (B×cols), W ← W −
//     Err1·Hinv[i1:i2, :] on the device (full width: the columns < i2 are never read again, and Hinv is
//     upper so columns < i1 get −0), download the slab.
//   host (CUDA, where the Node binding returns every output to JS, and the CPU EP): Hinv (float32) is
//     baked into the session as an initializer on CUDA, so it stays on the GPU; W is a host float32 copy; per block the pending Err1
//     blocks go up and only the next slab's correction comes back; every 8 blocks one product
//     W[:, i2:] −= E_pending·Hinv[p0:i2, i2:] flushes them (deferred updates, ~8× fewer bytes back).
// Precision: the device path is float32 (W, Err1, Hinv, products; TF32 on the CUDA EP). Golden
// exactness holds for the CPU float64 path (gptq.ts); this one agrees to float32 rounding (tested on
// the CPU EP against the TypeScript kernel: codes ≥ 99.5 % equal, loss within 1e-4).

import * as ort from 'onnxruntime-node';
import { GraphBuilder } from '../compute/graph';
import type { ComputeRuntime, Tensor } from '../compute/runtime';
import { choleskyInverseUpper as choleskyInverseUpperOrt, choleskyInverseUpperTensor } from '../linalg/cholesky';
import { gptqQuantizeAsync, type GptqOptions, type GptqResult, type LazyUpdateRequest } from './gptq';
import { choleskyInverseUpper as choleskyInverseUpperTs } from './gptq_linalg';

/** Applies GPTQ's lazy updates to a W it keeps itself, handing back only the slab the core reads next. */
export interface SlabUpdater {
  readonly mode: 'resident' | 'host';
  /** W (rows×cols float32) as the core has it at its first lazy update. */
  init(W: Float32Array): Promise<void>;
  /**
   * W[:, i2:] −= Err1·Hinv[i1:i2, i2:]; returns W[:, c0:c1] (rows×(c1−c0)) with c0 = i2 + `ahead` (default 0;
   * the pipelined driver of gptq_parallel.ts asks one block ahead and corrects the nearer block itself).
   */
  update(err1: Float32Array, count: number, i1: number, i2: number, ahead?: number): Promise<{ slab: Float32Array; c0: number; c1: number }>;
  readonly stats: { updates: number; seconds: number };
  release(): Promise<void>;
}

const now = () => performance.now() / 1000;

/** Picks the mode for the runtime's EP: resident where outputs can stay on the device or on the CPU EP. */
export async function createSlabUpdater(rt: ComputeRuntime, rows: number, cols: number, hinvUpper: Float64Array, slabCols: number, mode: 'auto' | 'resident' | 'host' = 'auto'): Promise<SlabUpdater> {
  if (mode === 'resident') return createResidentUpdater(rt, rows, cols, hinvUpper, slabCols);
  if (mode === 'host') return createHostUpdater(rt, rows, cols, hinvUpper, slabCols);
  // CPU EP: host mode too (deferred updates do ~half the flops of the full-width resident update and copy
  // no W per block); its Hinv is an ordinary input there (host tensors are zero-copy on the CPU EP).
  return rt.ep === 'webgpu' ? createResidentUpdater(rt, rows, cols, hinvUpper, slabCols) : createHostUpdater(rt, rows, cols, hinvUpper, slabCols);
}

/** [a] as an int64 tensor: Slice bounds (ORT keeps Slice's starts/ends on the CPU; the data stays on the device). */
const i64 = (a: number) => new ort.Tensor('int64', BigInt64Array.of(BigInt(a)), [1]);

function residentUpdateModel(): Uint8Array {
  const g = new GraphBuilder('gptq_resident_update');
  const w = g.input('w', 'float32', ['R', 'C']);
  const e = g.input('e', 'float32', ['R', 'K']);
  const h = g.input('hrows', 'float32', ['K', 'C']); // Hinv[i1:i2, :]
  g.output(g.op('Sub', [w, g.op('MatMul', [e, h])]), 'wn');
  return g.toModel();
}

function slabModel(): Uint8Array {
  const g = new GraphBuilder('gptq_slab');
  const w = g.input('w', 'float32', ['R', 'C']);
  g.output(g.op('Slice', [w, g.input('c0', 'int64', [1]), g.input('c1', 'int64', [1]), g.constI64([1])]), 'slab'); // W[:, c0:c1]
  return g.toModel();
}

/**
 * Largest device buffer we create (W is kept as row chunks of at most this size): 64 MiB is what the
 * device guide verified on WebGPU; Dawn's default storage-binding limit is 128 MiB unless ORT raises it.
 */
const CHUNK_BYTES = Number(process.env.LOPRO_DEVICE_CHUNK_MB ?? 64) * 2 ** 20;

export async function createResidentUpdater(rt: ComputeRuntime, rows: number, cols: number, hinvUpper: Float64Array, slabCols: number): Promise<SlabUpdater> {
  const chunkRows = Math.max(1, Math.min(rows, Math.floor(CHUNK_BYTES / (4 * cols))));
  const chunks: { r0: number; r1: number; W?: Tensor }[] = [];
  for (let r0 = 0; r0 < rows; r0 += chunkRows) chunks.push({ r0, r1: Math.min(rows, r0 + chunkRows) });
  const stats = { updates: 0, seconds: 0 };
  // Hinv[i1:i2, :] goes up once per block (count×cols: the whole Hinv crosses once per layer, in pieces).
  // The next block's rows are known in advance, so their upload starts right after an update returns and
  // overlaps the workers' column loop.
  const uploadRows = (i1: number, i2: number) => rt.upload(rt.host(Float32Array.from(hinvUpper.subarray(i1 * cols, i2 * cols)), [i2 - i1, cols]));
  let next: { i1: number; t: Promise<Tensor> } | undefined;
  return {
    mode: 'resident',
    stats,
    async init(w0) {
      for (const c of chunks) c.W = await rt.upload(rt.host(w0.slice(c.r0 * cols, c.r1 * cols), [c.r1 - c.r0, cols]));
    },
    async update(err1, count, i1, i2, ahead = 0) {
      const t = now();
      let hrows: Tensor;
      if (next && next.i1 === i1) hrows = await next.t;
      else {
        if (next) rt.release(await next.t);
        hrows = await uploadRows(i1, i2);
      }
      next = undefined;
      const su = await rt.session('gptq/resident_update', residentUpdateModel, 'device');
      const ss = await rt.session('gptq/slab', slabModel, 'host');
      const c0 = Math.min(cols, i2 + ahead), c1 = Math.min(cols, c0 + slabCols), sw = c1 - c0;
      const slab = new Float32Array(rows * sw);
      for (const c of chunks) {
        if (!c.W) throw new Error('SlabUpdater.update before init');
        const out = await rt.run(su, { w: c.W, e: rt.host(err1.subarray(c.r0 * count, c.r1 * count), [c.r1 - c.r0, count]), hrows });
        rt.release(c.W);
        c.W = out.wn;
        if (sw === 0) continue;
        const r = await rt.run(ss, { w: c.W, c0: i64(c0), c1: i64(c1) });
        slab.set(r.slab.data as Float32Array, c.r0 * sw);
      }
      rt.release(hrows);
      if (i2 + count < cols) {
        const n1 = i2, n2 = Math.min(cols, i2 + count);
        next = { i1: n1, t: uploadRows(n1, n2) };
        next.t.catch(() => undefined); // awaited (and rethrown) by the next update
      }
      stats.updates++;
      stats.seconds += now() - t;
      return { slab, c0, c1 };
    },
    async release() {
      for (const c of chunks) rt.release(c.W);
      if (next) rt.release(await next.t.catch(() => undefined));
      next = undefined;
    },
  };
}

/** CUDA: Hinv lives in the session as an initializer; the trailing product comes back to the host. */
export async function createHostUpdater(rt: ComputeRuntime, rows: number, cols: number, hinvUpper: Float64Array, slabCols: number): Promise<SlabUpdater> {
  const hinv32 = Float32Array.from(hinvUpper);
  const asInput = rt.ep === 'cpu';
  const build = () => {
    const g = new GraphBuilder('gptq_host_update');
    const e = g.input('e', 'float32', ['R', 'K']);
    const h = asInput ? g.input('hinv', 'float32', ['C', 'C']) : g.initializer('hinv', hinv32, [cols, cols]);
    const blk = g.op('Slice', [h, g.input('starts', 'int64', [2]), g.input('ends', 'int64', [2]), g.constI64([0, 1])]); // Hinv[r0:r1, c0:c1]
    g.output(g.op('MatMul', [e, blk]), 'p');
    return g.toModel();
  };
  let session: ort.InferenceSession;
  let own = false;
  if (asInput) session = await rt.session('gptq/host_update_input', build, 'host');
  else {
    // Its own session (not the runtime's LRU cache): it holds this layer's Hinv on the GPU and is
    // released with the updater. Creation is still counted in the runtime's counters.
    const t0 = performance.now();
    const epOpt = rt.ep === 'cuda' ? [{ name: 'cuda', deviceId: 0 }] : [rt.ep];
    session = await ort.InferenceSession.create(build(), { executionProviders: epOpt, graphOptimizationLevel: 'all', logSeverityLevel: 3 });
    own = true;
    rt.counters.sessionsCreated++;
    rt.counters.sessionCreateMs += performance.now() - t0;
    rt.counters.h2dBytes += hinv32.byteLength;
  }
  const hinvFeed: Record<string, Tensor> = asInput ? { hinv: rt.host(hinv32, [cols, cols]) } : {};
  let W: Float32Array | undefined;
  const stats = { updates: 0, seconds: 0 };
  // Deferred updates: the errors of the last few blocks stay pending; the next slab is W's stale slab
  // minus their product with the matching Hinv block (rows×S comes back, not rows×(cols−i2)), and every
  // HOST_FLUSH blocks one product brings all pending updates into the trailing W. Cuts the device→host
  // bytes by ~HOST_FLUSH× for a pending-error upload that grows to HOST_FLUSH blocks.
  const flushEvery = Math.max(1, Number(process.env.LOPRO_HOST_FLUSH ?? 8));
  const pending: { count: number; E: Float32Array }[] = [];
  let p0 = 0;
  const product = async (K: number, r0: number, r1: number, c0: number, c1: number): Promise<Float32Array> => {
    const Ecat = new Float32Array(rows * K);
    for (let r = 0; r < rows; r++) {
      let o = r * K;
      for (const { count, E } of pending) {
        Ecat.set(E.subarray(r * count, (r + 1) * count), o);
        o += count;
      }
    }
    const out = await rt.run(session, {
      ...hinvFeed,
      e: rt.host(Ecat, [rows, K]),
      starts: new ort.Tensor('int64', BigInt64Array.of(BigInt(r0), BigInt(c0)), [2]),
      ends: new ort.Tensor('int64', BigInt64Array.of(BigInt(r1), BigInt(c1)), [2]),
    });
    return out.p.data as Float32Array;
  };
  return {
    mode: 'host',
    stats,
    async init(w0) {
      W = Float32Array.from(w0);
    },
    async update(err1, count, i1, i2, ahead = 0) {
      const t = now();
      if (!W) throw new Error('SlabUpdater.update before init');
      if (!pending.length) p0 = i1;
      pending.push({ count, E: err1.slice(0, rows * count) });
      const K = i2 - p0;
      const c0 = Math.min(cols, i2 + ahead), c1 = Math.min(cols, c0 + slabCols), w = c1 - c0;
      const slab = new Float32Array(rows * w);
      if (pending.length >= flushEvery) {
        const n = cols - i2, P = await product(K, p0, i2, i2, cols); // W[:, i2:] −= E_pending·Hinv[p0:i2, i2:]
        for (let r = 0; r < rows; r++) {
          const wo = r * cols + i2, po = r * n;
          for (let j = 0; j < n; j++) W[wo + j] -= P[po + j];
        }
        pending.length = 0;
        for (let r = 0; r < rows; r++) slab.set(W.subarray(r * cols + c0, r * cols + c1), r * w);
      } else if (w > 0) {
        const P = await product(K, p0, i2, c0, c1); // slab only: W[:, c0:c1] − E_pending·Hinv[p0:i2, c0:c1]
        for (let r = 0; r < rows; r++) {
          const wo = r * cols + c0, po = r * w;
          for (let j = 0; j < w; j++) slab[po + j] = W[wo + j] - P[po + j];
        }
      }
      stats.updates++;
      stats.seconds += now() - t;
      return { slab, c0, c1 };
    },
    async release() {
      W = undefined;
      pending.length = 0;
      if (own) await session.release();
    },
  };
}

export interface DeviceGptqOptions {
  rt: ComputeRuntime;
  /** Hinv elsewhere (e.g. on the CPU EP while the updates run on the GPU); overrides `cholesky`. */
  choleskyInverseUpperAsync?: (hVals: Float64Array, n: number) => Promise<Float64Array>;
  /** Updater layout (default: resident on WebGPU, host elsewhere). */
  updater?: 'auto' | 'resident' | 'host';
  /** Hinv engine: 'ort' = blocked Cholesky of src/engine/linalg on rt (default for cols ≥ 512), 'ts' = float64 TypeScript. */
  cholesky?: 'ort' | 'ts';
}

export interface DeviceGptqResult extends GptqResult {
  device: { mode: 'resident' | 'host' | 'none'; updates: number; updateSeconds: number };
}

/**
 * Columns GPTQ reads after a lazy update at i2 (a multiple of B): the block [i2, i2+B), and for dynamic
 * groups W[:, k:k+G] at each group start k in the block. G | B: the last start is i2+B−G → B columns;
 * B | G: a start only at i2 → G columns; otherwise at most B+G.
 */
export function slabWidth(opts: GptqOptions): number {
  const B = opts.blockSize ?? 128, G = opts.groupSize ?? -1;
  if (G <= 0 || opts.staticGroups) return B;
  if (B % G === 0) return B;
  if (G % B === 0) return G;
  return B + G;
}

/** Hinv on `rt` (blocked ORT Cholesky) or in TypeScript, as a GptqAsyncHooks entry. */
export function choleskyOn(rt: ComputeRuntime, engine?: 'ort' | 'ts', leaf?: number): (h: Float64Array, n: number) => Promise<Float64Array> {
  // `leaf`: the blocked Cholesky's float64 leaf size (fewer ORT runs and leaf round trips when larger; default: linalg's).
  return async (h, n) => ((engine ?? (n >= 512 ? 'ort' : 'ts')) === 'ort' ? choleskyInverseUpperOrt(h, n, { rt, leaf }) : choleskyInverseUpperTs(h, n));
}

/** ORT's device Cholesky can leave U on the device (WebGPU); LOPRO_GPTQ_HINV=host forces the host copy (A/B runs). */
const hinvOnDevice = (rt: ComputeRuntime) => rt.keepsDataOnDevice && process.env.LOPRO_GPTQ_HINV !== 'host';

/**
 * The device loop's Cholesky hooks (quant/gptq_device_loop.ts): U left on `rt`'s device where the
 * runtime keeps data there (WebGPU), else the host copy of choleskyOn. LOPRO_GPTQ_HINV=host: always
 * the host copy (A/B runs).
 */
export function deviceLoopCholesky(rt: ComputeRuntime, leaf?: number): {
  choleskyInverseUpperAsync: (h: Float64Array, n: number) => Promise<Float64Array>;
  choleskyInverseUpperTensor?: (h: Float64Array, n: number) => Promise<Tensor>;
} {
  const onDevice = hinvOnDevice(rt);
  return {
    choleskyInverseUpperAsync: choleskyOn(rt, undefined, leaf),
    ...(onDevice ? { choleskyInverseUpperTensor: (h: Float64Array, n: number) => choleskyInverseUpperTensor(h, n, { rt, leaf }) } : {}),
  };
}

/**
 * Where the fused kernels (quant/gptq_fused.ts) take Hinv from: the Dawn Cholesky on their own device
 * (default), or with LOPRO_FUSED_HINV=ort (A/B runs) ONNX Runtime's — on WebGPU the device Cholesky's
 * U read back as float32, elsewhere choleskyOn's float64 copy.
 */
export function fusedCholesky(rt: ComputeRuntime, leaf?: number, from: 'dawn' | 'ort' = process.env.LOPRO_FUSED_HINV === 'ort' ? 'ort' : 'dawn'): {
  hinvFrom: 'dawn' | 'hooks';
  choleskyInverseUpperAsync?: (h: Float64Array, n: number) => Promise<Float64Array>;
  choleskyInverseUpperF32?: (h: Float64Array, n: number) => Promise<Float32Array>;
} {
  if (from === 'dawn') return { hinvFrom: 'dawn' };
  const onDevice = hinvOnDevice(rt);
  const f32 = async (h: Float64Array, n: number) => {
    const U = await choleskyInverseUpperTensor(h, n, { rt, leaf });
    try {
      return await rt.download(U);
    } finally {
      rt.release(U);
    }
  };
  return { hinvFrom: 'hooks', choleskyInverseUpperAsync: choleskyOn(rt, undefined, leaf), ...(onDevice ? { choleskyInverseUpperF32: f32 } : {}) };
}

/** Single-threaded GPTQ with the lazy updates on `opts.rt` (the column loop stays in TypeScript). */
export async function gptqQuantizeDevice(
  wVals: Float32Array | Float64Array, rows: number, cols: number,
  hVals: Float32Array | Float64Array, opts: GptqOptions & DeviceGptqOptions,
): Promise<DeviceGptqResult> {
  const { rt } = opts;
  const chol = opts.choleskyInverseUpperAsync ?? choleskyOn(rt, opts.cholesky);
  let hinv: Float64Array | undefined;
  let upd: SlabUpdater | undefined;
  const slabCols = slabWidth(opts);
  try {
    const r = await gptqQuantizeAsync(wVals, rows, cols, hVals, {
      ...opts,
      choleskyInverseUpperAsync: async (h, n) => (hinv = await chol(h, n)),
      lazyUpdateAsync: async (q: LazyUpdateRequest) => {
        if (!upd) {
          upd = await createSlabUpdater(rt, rows, cols, hinv ?? q.hinvUpper, slabCols, opts.updater);
          await upd.init(Float32Array.from(q.W));
        }
        const { slab, c0, c1 } = await upd.update(Float32Array.from(q.err1.subarray(0, rows * q.count)), q.count, q.i1, q.i2);
        const w = c1 - c0;
        for (let r = 0; r < rows; r++) {
          const src = r * w, dst = r * cols + c0;
          for (let j = 0; j < w; j++) q.W[dst + j] = slab[src + j];
        }
      },
    });
    return { ...r, device: { mode: upd?.mode ?? 'none', updates: upd?.stats.updates ?? 0, updateSeconds: upd?.stats.seconds ?? 0 } };
  } finally {
    await upd?.release();
  }
}
