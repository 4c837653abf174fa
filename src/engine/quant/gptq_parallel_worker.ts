// Worker side of gptq_parallel.ts: runs the unchanged GPTQ core on one row chunk, with the shared
// Hinv in place of the Cholesky, and (coordinated mode) hands each lazy update to the main thread:
// Err1 rows go into a shared buffer, the main thread updates all rows at once and sends back the
// next slab of W (the only columns the core reads before its next lazy update; see gptq_device.ts).

import { parentPort } from 'node:worker_threads';
import { gptqQuantizeAsync, type GptqOptions, type GptqResult, type LazyUpdateRequest } from './gptq';
import { lowRankWeight } from './r1svd';
import { rotateRowsInPlace } from './rotation';
import { dequantizeLoPRo } from './lopro_dequant';
import type { ParallelTask } from './gptq_parallel_lopro';
import { kmeansBest, kmeansNearest } from './kmeans';

export interface WorkerTask {
  type: 'run';
  /** Echoed in every reply, so replies of an abandoned run (after a failure) are never taken for this one's. */
  id: number;
  W: Float32Array | Float64Array;
  r0: number; r1: number; rows: number; cols: number;
  H: Float64Array;
  /** Shared Hinv; undefined when the probe's Cholesky failed (`failure` says how). */
  hinv?: Float64Array;
  failure?: { name: string; message: string };
  opts: GptqOptions;
  coordinated: boolean;
  /** Pipelined coordinated mode (gptq_parallel.ts `pipeline`): two slots in errBuf/slabBuf, slabs one block ahead. */
  pipeline?: boolean;
  /** Hinv (or the failure) comes later by a 'hinv' message (gptq_parallel.ts `overlapCholesky`). */
  hinvLater?: boolean;
  errBuf?: Float32Array; slabBuf?: Float32Array; initBuf?: Float32Array;
}

export type WorkerReply =
  | { type: 'lazy'; id: number; i1: number; i2: number; count: number }
  | { type: 'done'; id: number; result: GptqResult }
  | { type: 'error'; id: number; name: string; message: string };

interface SlabMsg { type: 'slab'; c0: number; c1: number; slot?: number }
interface HinvMsg { type: 'hinv'; id: number; hinv?: Float64Array; failure?: { name: string; message: string } }
type MainMessage = WorkerTask | SlabMsg | HinvMsg | { type: 'task'; task: ParallelTask };

/** LoPRo's row/column-parallel pieces (gptq_parallel_lopro.ts): same loops, same summation order. */
function runTask(t: ParallelTask): void {
  switch (t.kind) {
    case 'mv': {
      const { A, n, x, y } = t;
      for (let i = t.r0; i < t.r1; i++) {
        let s = 0;
        const o = i * n;
        for (let j = 0; j < n; j++) s += A[o + j] * x[j];
        y[i] = s;
      }
      return;
    }
    case 'mtv': {
      const { A, m, n, y, z, c0, c1 } = t;
      for (let j = c0; j < c1; j++) z[j] = 0;
      for (let i = 0; i < m; i++) {
        const yi = y[i];
        if (yi === 0) continue;
        const o = i * n;
        for (let j = c0; j < c1; j++) z[j] += yi * A[o + j];
      }
      return;
    }
    case 'deflate': {
      const { A, n, u, v, s } = t;
      for (let i = t.r0; i < t.r1; i++) {
        const a = s * u[i];
        if (a === 0) continue;
        const o = i * n;
        for (let j = 0; j < n; j++) A[o + j] -= a * v[j];
      }
      return;
    }
    case 'residual': {
      const { W, R, n, r0, r1 } = t;
      const Wr = lowRankWeight(t.U, t.sigma, t.V, r1 - r0, n, t.rank, t.alpha);
      for (let k = 0, o = r0 * n; k < Wr.length; k++) R[o + k] = W[o + k] - Wr[k];
      return;
    }
    case 'colAbsSum': {
      const { R, m, n, out, c0, c1 } = t;
      for (let j = c0; j < c1; j++) out[j] = 0;
      for (let i = 0; i < m; i++) {
        const o = i * n;
        for (let j = c0; j < c1; j++) out[j] += Math.abs(R[o + j]);
      }
      return;
    }
    case 'gatherRotate': {
      const { R, Rt, n, perm, r0, r1 } = t;
      for (let i = r0; i < r1; i++) {
        const o = i * n;
        for (let k = 0; k < n; k++) Rt[o + k] = R[o + perm[k]];
      }
      rotateRowsInPlace(Rt.subarray(r0 * n, r1 * n), r1 - r0, t.plan);
      return;
    }
    case 'permRotRows': {
      const { H, M, n, perm, r0, r1 } = t;
      for (let a = r0; a < r1; a++) {
        const src = perm[a] * n, dst = a * n;
        for (let b = 0; b < n; b++) M[dst + b] = H[src + perm[b]];
      }
      rotateRowsInPlace(M.subarray(r0 * n, r1 * n), r1 - r0, t.plan);
      return;
    }
    case 'transRotRows': {
      const { M, T, n, r0, r1 } = t;
      for (let j = r0; j < r1; j++) for (let i = 0; i < n; i++) T[j * n + i] = M[i * n + j];
      rotateRowsInPlace(T.subarray(r0 * n, r1 * n), r1 - r0, t.plan);
      return;
    }
    case 'symmetrize': {
      const { T, n, r0, r1 } = t;
      for (let i = r0; i < r1; i++)
        for (let j = i + 1; j < n; j++) {
          const v = 0.5 * (T[i * n + j] + T[j * n + i]);
          T[i * n + j] = v;
          T[j * n + i] = v;
        }
      return;
    }
    case 'dequant':
      t.out.set(dequantizeLoPRo(t.stored), t.r0 * t.stored.cols);
      return;
    case 'scaleCols': {
      const { W, Wsh, A, alpha, n, r0, r1 } = t;
      if (W !== Wsh) Wsh.set(W.subarray(r0 * n, r1 * n), r0 * n);
      for (let i = r0; i < r1; i++) for (let j = 0, o = i * n; j < n; j++) A[o + j] = W[o + j] * alpha[j];
      return;
    }
    case 'kmeans': {
      if (t.pass.kind === 'best') kmeansBest(t.a, t.d, t.pass.c, t.r0, t.r1);
      else kmeansNearest(t.a, t.d, t.k, t.r0, t.r1);
      return;
    }
    case 'toF32': {
      const { src, dst, i0, i1 } = t;
      for (let i = i0; i < i1; i++) {
        dst[i] = src[i];
        // The float32 value: a finite float64 beyond ±3.4e38 becomes ±Infinity here.
        if (!Number.isFinite(dst[i])) throw new Error(`non-finite value (${src[i]} as float32) at flat index ${i}`);
      }
      return;
    }
  }
}

/** W[r, c0:c1] −= Σ_i E[r, i]·Hinv[i1+i, c0:c1] for the worker's rows (a rows×count×(c1−c0) product). */
function correctSlab(W: Float64Array, E: Float64Array, H: Float64Array, n: number, cols: number, count: number, i1: number, c0: number, c1: number): void {
  for (let r = 0; r < n; r++) {
    const dst = r * cols;
    for (let i = 0; i < count; i++) {
      const e = E[r * count + i];
      if (e === 0) continue;
      const h = (i1 + i) * cols;
      for (let j = c0; j < c1; j++) W[dst + j] -= e * H[h + j];
    }
  }
}

let correctMs = 0, waitMs = 0;

async function run(t: WorkerTask, nextSlab: () => Promise<SlabMsg>, hinvMsg: () => Promise<HinvMsg>): Promise<GptqResult> {
  const { r0, r1, cols } = t;
  const n = r1 - r0;
  let first = true;
  // Pipelined: at the end of block k the core needs W[:, i2:i2+S] with every update so far. The
  // updater's round k−1 (sent while this block ran) has all updates of blocks < k; this block's own
  // errors are applied here: W[:, i2:i2+S] −= Err1·Hinv[i1:i2, i2:i2+S] (float64, this worker's rows).
  // At block 0 the core's own W still holds the initial columns (nothing to wait for).
  const lazyPipelined = async (q: LazyUpdateRequest) => {
    const { errBuf, slabBuf, initBuf } = t;
    if (!errBuf || !slabBuf || !initBuf) throw new Error('coordinated mode without shared buffers');
    const { rows } = t, B = t.opts.blockSize ?? 128, { count, i1, i2 } = q;
    const slot = (i1 / B) % 2;
    if (first) initBuf.set(q.W, r0 * cols);
    errBuf.set(q.err1.subarray(0, n * count), slot * rows * B + r0 * count);
    parentPort!.postMessage({ type: 'lazy', id: t.id, i1, i2, count } satisfies WorkerReply);
    const sw = slabBuf.length / (2 * rows);
    const c0 = i2, c1 = Math.min(cols, i2 + sw), w = c1 - c0;
    if (!first) {
      const tw = performance.now();
      const m = await nextSlab();
      waitMs += performance.now() - tw;
      if (m.c0 !== c0 || m.c1 !== c1) throw new Error(`pipelined GPTQ: slab [${m.c0}, ${m.c1}) arrived, [${c0}, ${c1}) expected`);
      const base = (m.slot ?? 0) * rows * sw;
      for (let r = 0; r < n; r++) {
        const src = base + (r0 + r) * w, dst = r * cols + c0;
        for (let j = 0; j < w; j++) q.W[dst + j] = slabBuf[src + j];
      }
    }
    first = false;
    const tc = performance.now();
    correctSlab(q.W, q.err1, q.hinvUpper, n, cols, count, i1, c0, c1);
    correctMs += performance.now() - tc;
  };
  const lazyUpdateAsync = async (q: LazyUpdateRequest) => {
    const { errBuf, slabBuf, initBuf } = t;
    if (!errBuf || !slabBuf || !initBuf) throw new Error('coordinated mode without shared buffers');
    if (first) {
      initBuf.set(q.W, r0 * cols); // the core's W after its prep (dead columns zeroed, permuted)
      first = false;
    }
    errBuf.set(q.err1.subarray(0, n * q.count), r0 * q.count);
    parentPort!.postMessage({ type: 'lazy', id: t.id, i1: q.i1, i2: q.i2, count: q.count } satisfies WorkerReply);
    const { c0, c1 } = await nextSlab();
    const w = c1 - c0;
    for (let r = 0; r < n; r++) {
      const src = (r0 + r) * w, dst = r * cols + c0;
      for (let j = 0; j < w; j++) q.W[dst + j] = slabBuf[src + j];
    }
  };
  return gptqQuantizeAsync(t.W.subarray(r0 * cols, r1 * cols), n, cols, t.H, {
    ...t.opts,
    onWarning: () => {}, // the main thread warns once
    choleskyInverseUpperAsync: async () => {
      const m = t.hinvLater ? await hinvMsg() : t;
      if (m.hinv) return m.hinv;
      throw Object.assign(new Error(m.failure?.message ?? 'Cholesky failed'), { name: m.failure?.name ?? 'Error' });
    },
    lazyUpdateAsync: t.coordinated ? (t.pipeline ? lazyPipelined : lazyUpdateAsync) : undefined,
  });
}

if (parentPort) {
  const port = parentPort;
  // Slab messages queue up: in pipelined mode one can arrive before the core asks for it.
  let waiting: ((s: SlabMsg) => void) | undefined;
  const queued: SlabMsg[] = [];
  let runId = -1;
  let waitingHinv: ((h: HinvMsg) => void) | undefined;
  let hinvQueued: HinvMsg | undefined;
  const hinvMsg = () => new Promise<HinvMsg>((res) => {
    if (hinvQueued) res(hinvQueued);
    else waitingHinv = res;
  });
  const nextSlab = () => new Promise<SlabMsg>((res) => {
    const q = queued.shift();
    if (q) res(q);
    else waiting = res;
  });
  port.on('message', (m: MainMessage) => {
    if (m.type === 'task') {
      try {
        runTask(m.task);
        port.postMessage({ type: 'taskDone' });
      } catch (e) {
        port.postMessage({ type: 'taskError', message: e instanceof Error ? e.message : String(e) });
      }
      return;
    }
    if (m.type === 'slab') {
      const w = waiting;
      waiting = undefined;
      if (w) w(m);
      else queued.push(m);
      return;
    }
    if (m.type === 'hinv') {
      if (m.id !== runId) return; // for an abandoned run
      const w = waitingHinv;
      waitingHinv = undefined;
      if (w) w(m);
      else hinvQueued = m;
      return;
    }
    queued.length = 0; // a new run: nothing of an abandoned one may be taken for its slabs
    runId = m.id;
    hinvQueued = undefined;
    correctMs = waitMs = 0;
    run(m, nextSlab, hinvMsg).then(
      (result) => {
        if (process.env.LOPRO_PIPE_DEBUG) process.stderr.write(`worker ${m.r0}-${m.r1}: slab wait ${waitMs.toFixed(0)} ms, correction ${correctMs.toFixed(0)} ms, loop ${(result.seconds.columnLoop * 1000).toFixed(0)} ms\n`);
        const transfer = [result.Q.buffer, result.codes.buffer, result.scale.buffer, result.zero.buffer] as ArrayBuffer[];
        port.postMessage({ type: 'done', id: m.id, result } satisfies WorkerReply, transfer);
      },
      (e: unknown) => port.postMessage({ type: 'error', id: m.id, name: e instanceof Error ? e.name : 'Error', message: e instanceof Error ? e.message : String(e) } satisfies WorkerReply),
    );
  });
}
