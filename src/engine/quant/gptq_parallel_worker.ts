// Worker side of gptq_parallel.ts: runs the unchanged GPTQ core on one row chunk, with the shared
// Hinv in place of the Cholesky, and (coordinated mode) hands each lazy update to the main thread:
// Err1 rows go into a shared buffer, the main thread updates all rows at once and sends back the
// next slab of W (the only columns the core reads before its next lazy update; see gptq_device.ts).

import { parentPort } from 'node:worker_threads';
import { gptqQuantizeAsync, type GptqOptions, type GptqResult, type LazyUpdateRequest } from './gptq';

export interface WorkerTask {
  type: 'run';
  W: Float32Array | Float64Array;
  r0: number; r1: number; rows: number; cols: number;
  H: Float64Array;
  /** Shared Hinv; undefined when the probe's Cholesky failed (`failure` says how). */
  hinv?: Float64Array;
  failure?: { name: string; message: string };
  opts: GptqOptions;
  coordinated: boolean;
  errBuf?: Float32Array; slabBuf?: Float32Array; initBuf?: Float32Array;
}

export type WorkerReply =
  | { type: 'lazy'; i1: number; i2: number; count: number }
  | { type: 'done'; result: GptqResult }
  | { type: 'error'; name: string; message: string };

type MainMessage = WorkerTask | { type: 'slab'; c0: number; c1: number };

async function run(t: WorkerTask, nextSlab: () => Promise<{ c0: number; c1: number }>): Promise<GptqResult> {
  const { r0, r1, cols } = t;
  const n = r1 - r0;
  let first = true;
  const lazyUpdateAsync = async (q: LazyUpdateRequest) => {
    const { errBuf, slabBuf, initBuf } = t;
    if (!errBuf || !slabBuf || !initBuf) throw new Error('coordinated mode without shared buffers');
    if (first) {
      initBuf.set(q.W, r0 * cols); // the core's W after its prep (dead columns zeroed, permuted)
      first = false;
    }
    errBuf.set(q.err1.subarray(0, n * q.count), r0 * q.count);
    parentPort!.postMessage({ type: 'lazy', i1: q.i1, i2: q.i2, count: q.count } satisfies WorkerReply);
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
    choleskyInverseUpper: () => {
      if (t.hinv) return t.hinv;
      throw Object.assign(new Error(t.failure?.message ?? 'Cholesky failed'), { name: t.failure?.name ?? 'Error' });
    },
    lazyUpdateAsync: t.coordinated ? lazyUpdateAsync : undefined,
  });
}

if (parentPort) {
  const port = parentPort;
  let waiting: ((s: { c0: number; c1: number }) => void) | undefined;
  const nextSlab = () => new Promise<{ c0: number; c1: number }>((res) => { waiting = res; });
  port.on('message', (m: MainMessage) => {
    if (m.type === 'slab') {
      const w = waiting;
      waiting = undefined;
      w?.({ c0: m.c0, c1: m.c1 });
      return;
    }
    run(m, nextSlab).then(
      (result) => {
        const transfer = [result.Q.buffer, result.codes.buffer, result.scale.buffer, result.zero.buffer] as ArrayBuffer[];
        port.postMessage({ type: 'done', result } satisfies WorkerReply, transfer);
      },
      (e: unknown) => port.postMessage({ type: 'error', name: e instanceof Error ? e.name : 'Error', message: e instanceof Error ? e.message : String(e) } satisfies WorkerReply),
    );
  });
}
