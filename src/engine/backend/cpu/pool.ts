// The CPU backend's threads: a fixed set of worker_threads that run slices of row- or column-parallel
// tasks (tasks.ts) over SharedArrayBuffer-backed arrays. With one thread there are no workers: the same
// tasks run on the calling thread over plain arrays (measured on a 2-core machine, two workers were slower
// than the engine's own thread: their copies and messages outweigh a core that ONNX Runtime also wants).
// Every task computes its slice with the same loops as the whole, so the result never depends on the
// thread count.
//
// The worker script sits next to this module: cpu_worker.js beside the bundle (esbuild entry), or
// worker.ts under tsx (loaded through tsx's CommonJS hook).

import { existsSync } from 'node:fs';
import * as path from 'node:path';
import { Worker } from 'node:worker_threads';
import { runTask, type Task } from './tasks';

/** The worker script for the current build, if any. */
export function workerScriptPath(): string | undefined {
  return [path.join(__dirname, 'cpu_worker.js'), path.join(__dirname, 'worker.ts')].find((p) => existsSync(p));
}

type TypedArrayCtor<T> = { new (buffer: ArrayBuffer, byteOffset: number, length: number): T; BYTES_PER_ELEMENT: number };

export class WorkerPool {
  /** End of the queue of exclusive users (see run). */
  private tail: Promise<void> = Promise.resolve();
  private constructor(private readonly workers: Worker[]) {}

  /** `threads` ≤ 1: no workers, tasks run on this thread. */
  static create(threads: number): WorkerPool {
    if (threads <= 1) return new WorkerPool([]);
    const script = workerScriptPath();
    if (!script) throw new Error(`the CPU backend's worker script is missing next to ${__dirname} (a build without the cpu_worker entry?)`);
    return new WorkerPool(Array.from({ length: threads }, () => spawnWorker(script)));
  }

  /** Threads that run slices (1 without workers). */
  get size(): number {
    return Math.max(1, this.workers.length);
  }

  /** A zeroed array the workers can read and write (plain memory without workers). */
  alloc<T>(Arr: TypedArrayCtor<T>, n: number): T {
    const bytes = n * Arr.BYTES_PER_ELEMENT;
    return new Arr(this.workers.length ? (new SharedArrayBuffer(bytes) as unknown as ArrayBuffer) : new ArrayBuffer(bytes), 0, n);
  }

  /** `a` itself when the workers can read it, else a shared copy. */
  share<T extends Float32Array | Float64Array | Int32Array | Uint8Array | Uint16Array>(a: T): T {
    if (!this.workers.length || a.buffer instanceof SharedArrayBuffer) return a;
    const out = this.alloc(a.constructor as unknown as TypedArrayCtor<T>, a.length);
    (out as unknown as T).set(a as never);
    return out;
  }

  /**
   * Runs make(a, b, k) for slice k of [0, total) on each thread and waits for all (equal slices, or cut(k, n)
   * as the slice bounds). Callers queue for the pool: the workers' replies carry no task id.
   */
  run(total: number, make: (a: number, b: number, k: number) => Task, cut?: (k: number, n: number) => number): Promise<void> {
    const go = () => this.runOwned(total, make, cut);
    const r = this.tail.then(go, go);
    this.tail = r.then(
      () => undefined,
      () => undefined,
    );
    return r;
  }

  /** How many slices run() makes of `total` items. */
  slices(total: number): number {
    return Math.max(1, Math.min(this.size, total));
  }

  private async runOwned(total: number, make: (a: number, b: number, k: number) => Task, cut?: (k: number, n: number) => number): Promise<void> {
    const n = this.slices(total);
    const at = cut ?? ((k: number, p: number) => Math.round((k * total) / p));
    if (!this.workers.length) {
      runTask(make(0, total, 0));
      return;
    }
    // Every slice settles before the run does: a slice that failed must not leave another still writing
    // (or a late 'done' of it answering the next run's slice).
    const settled = await Promise.allSettled(
      this.workers.slice(0, n).map(
        (w, k) =>
          new Promise<void>((resolve, reject) => {
            const onMsg = (m: { type: string; message?: string; name?: string }) => {
              if (m.type !== 'taskDone' && m.type !== 'taskError') return;
              w.off('message', onMsg);
              w.off('error', onError);
              if (m.type === 'taskError') reject(Object.assign(new Error(m.message), { name: m.name ?? 'Error' }));
              else resolve();
            };
            const onError = (e: Error) => {
              w.off('message', onMsg);
              reject(e);
            };
            w.on('message', onMsg);
            w.on('error', onError);
            w.postMessage({ type: 'task', task: make(at(k, n), at(k + 1, n), k) });
          }),
      ),
    );
    const failed = settled.find((r) => r.status === 'rejected');
    if (failed) throw failed.reason;
  }

  async close(): Promise<void> {
    await Promise.all(this.workers.map((w) => w.terminate()));
  }
}

/** A .js worker loads directly; a .ts source (tests, benches under tsx) through tsx's CommonJS hook. */
export function spawnWorker(script: string): Worker {
  if (!script.endsWith('.ts')) return new Worker(script);
  return new Worker(`require('tsx/cjs/api').register(); require(${JSON.stringify(script)});`, { eval: true });
}
