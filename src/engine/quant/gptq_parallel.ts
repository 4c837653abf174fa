// Row-parallel GPTQ over worker_threads. GPTQ's rows are independent once Hinv is known: every
// column's update, the per-row group params and the loss only mix values within one row. So W is
// split into contiguous row chunks, Hinv is computed once (here) and shared read-only through a
// SharedArrayBuffer, and each worker runs the unchanged gptq.ts core on its chunk with
// `choleskyInverseUpper` returning the shared Hinv. Same code path as gptqQuantize ⇒ identical codes
// (tested). The lazy updates either run in each worker (TypeScript float64, `lazy: 'worker'`) or
// are coordinated here block by block (`lazy: updater`), e.g. on a GPU (gptq_device.ts): every
// worker hands in its Err1 rows, one device update covers all rows, and the next slab goes back.
//
// The worker script is located next to this module: gptq_parallel_worker.js in a bundle (esbuild
// entry beside the main bundle, see bench/build-device-bundle.mjs) or gptq_parallel_worker.ts under
// tsx (loaded through tsx's CommonJS hook). LOPRO_GPTQ_WORKER overrides the path ('none': one thread).
// Without a worker script and without a pool, gptqQuantizeParallel runs on the calling thread.

import { existsSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Worker } from 'node:worker_threads';
import { gptqQuantizeAsync, type GptqOptions, type GptqResult } from './gptq';
import { choleskyInverseUpper as choleskyInverseUpperTs } from './gptq_linalg';
import { slabWidth, type SlabUpdater } from './gptq_device';
import type { WorkerReply, WorkerTask } from './gptq_parallel_worker';

export interface ParallelOptions {
  /** Worker count (default: available parallelism, at most one per 32 rows). */
  threads?: number;
  /** Reuse a pool across layers (default: a temporary pool for this call). */
  pool?: GptqPool;
  /** Hinv on another engine (e.g. the blocked ORT Cholesky of src/engine/linalg). */
  choleskyInverseUpperAsync?: (hVals: Float64Array, n: number) => Promise<Float64Array>;
  /** Lazy updates: in each worker (TypeScript float64, default) or one coordinated updater for all rows. */
  lazy?: 'worker' | ((rows: number, cols: number, hinvUpper: Float64Array, slabCols: number) => Promise<SlabUpdater>);
  /**
   * Coordinated mode only: pipeline the device updates one block deep. The updater applies block k's
   * errors while the workers run block k+1; each worker corrects the slab it needs next with its own
   * last block's errors (rows×B×slab FMAs) instead of waiting for the device round trip. Same result
   * up to float32 rounding (the correction is float64).
   */
  pipeline?: boolean;
  /**
   * Start the workers before the Cholesky is done: their own prep (copies of W and H, dead columns,
   * damping: ~cols²·8 bytes each) then overlaps the Cholesky on the main thread / device, and Hinv (or
   * the fallback decision) reaches them by message. Same result.
   */
  overlapCholesky?: boolean;
}

export interface ParallelStats {
  threads: number;
  /** Main thread: the prep + Cholesky probe, then the wall time of the workers' run. */
  seconds: {
    cholesky: number; workers: number; merge: number; total: number; lazyDevice: number;
    /** Slowest worker's own core prep (its W and H copies, dead columns, damping). */
    workerPrep?: number;
    /** Slowest worker's time in its lazy hook: waiting for the coordinated update (round trip + slab copy). */
    workerWait?: number;
  };
}

const now = () => performance.now() / 1000;
let runCounter = 0;

/** Path of the worker script for the current build (bundle: .js sibling; tsx: .ts source). */
export function workerScriptPath(): string | undefined {
  if (process.env.LOPRO_GPTQ_WORKER === 'none') return undefined; // force one thread
  const cands = [process.env.LOPRO_GPTQ_WORKER, path.join(__dirname, 'gptq_parallel_worker.js'), path.join(__dirname, 'gptq_parallel_worker.ts')];
  return cands.find((p): p is string => !!p && existsSync(p));
}

/** A fixed set of workers, reused across layers (start-up under tsx costs ~0.5 s per worker). */
export class GptqPool {
  /** End of the queue of exclusive users (see exclusive). */
  private tail: Promise<void> = Promise.resolve();
  private constructor(readonly workers: Worker[]) {}

  /**
   * Runs `fn` with the workers to itself: the workers' replies carry no task id, so two callers
   * interleaving tasks on one worker would take each other's replies. Layers quantized concurrently
   * (run/layer_engines.ts) queue here for the pool; their device work overlaps meanwhile.
   */
  exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.tail.then(fn, fn);
    this.tail = run.then(() => undefined, () => undefined);
    return run;
  }

  static create(threads = os.availableParallelism()): GptqPool {
    const script = workerScriptPath();
    if (!script) throw new Error(`gptq_parallel: worker script not found next to ${__dirname} (set LOPRO_GPTQ_WORKER)`);
    return new GptqPool(Array.from({ length: Math.max(1, threads) }, () => spawnWorker(script)));
  }

  get size(): number {
    return this.workers.length;
  }

  async close(): Promise<void> {
    await Promise.all(this.workers.map((w) => w.terminate()));
  }
}

/** A .js worker loads directly; a .ts source (tests, bench under tsx) through tsx's CommonJS hook. */
function spawnWorker(script: string): Worker {
  if (!script.endsWith('.ts')) return new Worker(script);
  return new Worker(`require('tsx/cjs/api').register(); require(${JSON.stringify(script)});`, { eval: true });
}

function sharedCopy(vals: ArrayLike<number>, Arr: Float32ArrayConstructor | Float64ArrayConstructor): Float32Array | Float64Array {
  if ((vals instanceof Arr) && vals.buffer instanceof SharedArrayBuffer) return vals; // already shared (the workers only read it)
  const out = new Arr(new SharedArrayBuffer(vals.length * Arr.BYTES_PER_ELEMENT) as unknown as ArrayBuffer); // lib typing predates SAB-backed views
  out.set(vals);
  return out;
}

/** The plain-data part of GptqOptions (functions and the pool can't cross threads). */
function cloneableOptions(o: GptqOptions): GptqOptions {
  const { bits, groupSize, sym, clip, percDamp, blockSize, actOrder, staticGroups, perm, name } = o;
  return { bits, groupSize, sym, clip, percDamp, blockSize, actOrder, staticGroups, perm, name };
}

/** GPTQ with the rows split over worker threads; same result as gptqQuantize (codes identical). */
export function gptqQuantizeParallel(
  wVals: Float32Array | Float64Array, rows: number, cols: number,
  hVals: Float32Array | Float64Array, opts: GptqOptions & ParallelOptions,
): Promise<GptqResult & { parallel: ParallelStats }> {
  const run = () => gptqQuantizeParallelOwned(wVals, rows, cols, hVals, opts);
  return opts.pool ? opts.pool.exclusive(run) : run();
}

async function gptqQuantizeParallelOwned(
  wVals: Float32Array | Float64Array, rows: number, cols: number,
  hVals: Float32Array | Float64Array, opts: GptqOptions & ParallelOptions,
): Promise<GptqResult & { parallel: ParallelStats }> {
  if (!opts.pool && !workerScriptPath()) {
    // A bundle built without the worker entry (e.g. dist/engine.js today): same result on one thread.
    (opts.onWarning ?? console.warn)(`gptq_parallel: no worker script next to ${__dirname}; quantizing on one thread`);
    const t = now();
    const r = await gptqQuantizeAsync(wVals, rows, cols, hVals, { ...opts, choleskyInverseUpperAsync: opts.choleskyInverseUpperAsync });
    const s = r.seconds.total;
    return { ...r, parallel: { threads: 1, seconds: { cholesky: r.seconds.cholesky, workers: s, merge: 0, total: now() - t, lazyDevice: 0 } } };
  }
  const t0 = now();
  // 1. Probe: the core's own prep (dead columns, order, damping) on zero rows, capturing Hinv. The
  //    core decides about the Cholesky fallback (and warns, once); the workers repeat that decision.
  let hinv: Float64Array | undefined;
  let failure: { name: string; message: string } | undefined;
  const chol = opts.choleskyInverseUpperAsync ?? (async (h: Float64Array, n: number) => (opts.choleskyInverseUpper ?? choleskyInverseUpperTs)(h, n));
  const probeP = gptqQuantizeAsync(new Float32Array(0), 0, cols, hVals, {
    ...opts,
    choleskyInverseUpperAsync: async (h, n) => {
      try {
        const u = await chol(h, n);
        hinv = sharedCopy(u, Float64Array) as Float64Array;
        return u;
      } catch (e) {
        if (e instanceof Error) failure = { name: e.name, message: e.message };
        throw e;
      }
    },
  });
  const overlap = opts.overlapCholesky === true;
  probeP.catch(() => undefined); // awaited below (after the workers started, when overlapping)
  let probe = overlap ? undefined : await probeP;
  let t1 = now();
  const blockSize = opts.blockSize ?? 128;
  const slabCols = slabWidth(opts);

  // 2. Workers over row chunks.
  const own = !opts.pool;
  // Each worker's core copies H (cols²·8 bytes: 0.97 GB at 11008 columns), so by default the workers are
  // capped to keep those copies within LOPRO_GPTQ_HCOPY_GB (8 GB): past that, allocating and faulting in
  // the copies costs more than the extra column-loop threads save. (A gptq.ts option taking a
  // precomputed Hinv and only diag(H) would remove the copies: see the report.)
  const byMemory = Math.max(2, Math.floor((Number(process.env.LOPRO_GPTQ_HCOPY_GB ?? 8) * 1e9) / (cols * cols * 8)));
  const want = Math.max(1, Math.min(opts.threads ?? Math.min(os.availableParallelism(), byMemory), Math.ceil(rows / 32)));
  const pool = opts.pool ?? GptqPool.create(want);
  const n = Math.min(pool.size, want, Math.max(1, rows));
  const Arr = wVals instanceof Float64Array ? Float64Array : Float32Array;
  const W = sharedCopy(wVals, Arr), H = sharedCopy(hVals, Float64Array) as Float64Array;
  const coordinated = opts.lazy !== undefined && opts.lazy !== 'worker' && rows > 0 && cols > blockSize;
  // Pipelined: two slots each (block k's errors / round k's slab by parity k % 2; see onBlockPipelined).
  const pipeline = coordinated && opts.pipeline === true && (opts.lazySpan ?? blockSize) === blockSize;
  const slots = pipeline ? 2 : 1;
  const errBuf = coordinated ? new Float32Array(new SharedArrayBuffer(slots * rows * blockSize * 4)) : undefined;
  const slabBuf = coordinated ? new Float32Array(new SharedArrayBuffer(slots * rows * slabCols * 4)) : undefined;
  const initBuf = coordinated ? new Float32Array(new SharedArrayBuffer(rows * cols * 4)) : undefined;
  const bounds = Array.from({ length: n + 1 }, (_, i) => Math.round((i * rows) / n));
  // Hinv known (probe done): the coordinated updater over it, or over the identity after a failed Cholesky.
  const makeUpdater = async (): Promise<SlabUpdater | undefined> => {
    if (!coordinated) return undefined;
    const lazy = opts.lazy as Exclude<ParallelOptions['lazy'], 'worker' | undefined>;
    return lazy(rows, cols, hinv ?? identityF64(cols), slabCols);
  };
  let upd = overlap ? undefined : await makeUpdater();
  let lazyDevice = 0;

  const runId = ++runCounter;
  const workers = pool.workers.slice(0, n);
  const running = new Promise<GptqResult[]>((resolve, reject) => {
    const out: GptqResult[] = new Array(n);
    let done = 0, arrived = 0, started = false;
    const cleanup = () => workers.forEach((w) => { w.removeAllListeners('message'); w.removeAllListeners('error'); });
    const fail = (e: unknown) => { cleanup(); reject(e); };
    const onBlock = async (i1: number, i2: number, count: number) => {
      if (!upd || !errBuf || !slabBuf || !initBuf) return;
      const tl = now();
      if (!started) {
        await upd.init(initBuf);
        started = true;
      }
      const { slab, c0, c1 } = await upd.update(errBuf.slice(0, rows * count), count, i1, i2); // ORT takes no SharedArrayBuffer views
      slabBuf.set(slab.subarray(0, rows * (c1 - c0)));
      lazyDevice += now() - tl;
      for (const w of workers) w.postMessage({ type: 'slab', c0, c1 });
    };
    // Pipelined rounds: round k (block k's errors, all workers arrived) runs on the updater after round
    // k−1, then hands out W[:, i2+B : i2+B+S] (the slab the workers need at the end of block k+1) in
    // slot k % 2. A worker writes block k+1's errors only after it got round k−1's slab, and round k+1
    // waits for all of them, so the two slots never overlap in use.
    let chain: Promise<void> = Promise.resolve();
    const arrivedAt = new Map<number, number>();
    const onBlockPipelined = (i1: number, i2: number, count: number) => {
      const u = upd;
      if (!u || !errBuf || !slabBuf || !initBuf) return;
      const slot = (i1 / blockSize) % 2;
      const err = errBuf.slice(slot * rows * blockSize, slot * rows * blockSize + rows * count); // copied now: the slot is reused two blocks on
      if (i2 + blockSize >= cols) return; // no worker needs a slab beyond the last block
      chain = chain.then(async () => {
        const tl = now();
        if (!started) {
          await u.init(initBuf);
          started = true;
        }
        const { slab, c0, c1 } = await u.update(err, count, i1, i2, blockSize);
        slabBuf.set(slab.subarray(0, rows * (c1 - c0)), slot * rows * slabCols);
        lazyDevice += now() - tl;
        for (const w of workers) w.postMessage({ type: 'slab', c0, c1, slot });
      });
      chain.catch(fail);
    };
    workers.forEach((w, k) => {
      w.on('error', fail);
      w.on('message', (m: WorkerReply | { type: 'taskDone' | 'taskError' }) => {
        if (!('id' in m) || m.id !== runId) return; // a late reply of an earlier, failed run
        if (m.type === 'error') return fail(Object.assign(new Error(m.message), { name: m.name }));
        if (m.type === 'lazy') {
          if (pipeline) {
            // Workers can be a block apart here: count arrivals per block.
            const a = (arrivedAt.get(m.i1) ?? 0) + 1;
            if (a < n) arrivedAt.set(m.i1, a);
            else {
              arrivedAt.delete(m.i1);
              onBlockPipelined(m.i1, m.i2, m.count);
            }
          } else if (++arrived === n) {
            arrived = 0;
            onBlock(m.i1, m.i2, m.count).catch(fail);
          }
          return;
        }
        out[k] = m.result;
        if (++done === n) {
          cleanup();
          resolve(out);
        }
      });
      const task: WorkerTask = {
        type: 'run', id: runId, W, r0: bounds[k], r1: bounds[k + 1], rows, cols, H, hinv, failure,
        opts: cloneableOptions(opts), coordinated, pipeline, errBuf, slabBuf, initBuf, hinvLater: overlap,
      };
      w.postMessage(task);
    });
  });
  running.catch(() => undefined); // awaited below
  let results: GptqResult[];
  try {
    if (overlap) {
      try {
        probe = await probeP;
      } catch (e) {
        // The workers wait for Hinv: let them fail too (their replies go nowhere), then report the probe's error.
        for (const w of workers) w.postMessage({ type: 'hinv', id: runId, failure: { name: 'Error', message: 'probe failed' } });
        await running.catch(() => undefined);
        throw e;
      }
      t1 = now();
      upd = await makeUpdater();
      for (const w of workers) w.postMessage({ type: 'hinv', id: runId, hinv, failure });
    }
    results = await running;
  } finally {
    // Also on failure: a temporary pool must not keep the process alive, device memory must be freed.
    if (own) await pool.close();
    if (upd) await upd.release();
  }
  const t2 = now();

  // 3. Merge: row chunks of Q/codes/scale/zero, loss = Σ (each is a sum over rows).
  if (!probe) throw new Error('gptq_parallel: no probe result');
  const G = probe.groups;
  const Q = new Float32Array(rows * cols), codes = new Uint8Array(rows * cols), scale = new Float32Array(rows * G), zero = new Float32Array(rows * G);
  let loss = 0, columnLoop = 0, lazyUpdate = 0, workerPrep = 0;
  results.forEach((r, k) => {
    Q.set(r.Q, bounds[k] * cols);
    codes.set(r.codes, bounds[k] * cols);
    scale.set(r.scale, bounds[k] * G);
    zero.set(r.zero, bounds[k] * G);
    loss += r.loss;
    columnLoop = Math.max(columnLoop, r.seconds.columnLoop);
    lazyUpdate = Math.max(lazyUpdate, r.seconds.lazyUpdate);
    workerPrep = Math.max(workerPrep, r.seconds.prep);
  });
  const first = results[0] ?? probe;
  const t3 = now();
  return {
    Q, codes, scale, zero, gIdx: first.gIdx.length ? first.gIdx : probe.gIdx, groups: G,
    perm: probe.perm, invPerm: probe.invPerm, loss, deadColumns: probe.deadColumns, damp: probe.damp, choleskyFallback: probe.choleskyFallback,
    seconds: { prep: probe.seconds.prep, cholesky: probe.seconds.cholesky, columnLoop, lazyUpdate: coordinated ? lazyDevice : lazyUpdate, total: t3 - t0 },
    parallel: { threads: n, seconds: { cholesky: t1 - t0, workers: t2 - t1, merge: t3 - t2, total: t3 - t0, lazyDevice, workerPrep, workerWait: lazyUpdate } },
  };
}

function identityF64(n: number): Float64Array {
  const I = new Float64Array(n * n);
  for (let i = 0; i < n; i++) I[i * n + i] = 1;
  return I;
}
