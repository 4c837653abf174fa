// The next block's weights read on a worker thread while the pipeline works on this one: on a GPU the passes and
// layers leave the host waiting, and reading and widening a block's F16 or BF16 to float32 is otherwise main-thread
// work between blocks. The arrays come back transferred (not copied); the checks are the direct read's
// (loadBlockWeights), so a bad tensor fails with the same message, only earlier in time.

import type { Worker } from 'node:worker_threads';
import type { Checkpoint } from '../io/checkpoint';
import type { TensorRead, TensorReadResult } from '../io/tensor_reads';
import type { ModelConfig } from '../model/config';
import { assertFiniteWeights, loadBlockWeights, type BlockWeights, type WeightsProvider } from '../model/llama_forward';
import { blockTensorSuffixes } from '../model/llama_graph';
import { expectedShapes } from '../model/config';
import { spawnWorker, workerScriptPath } from '../backend/cpu/pool';

type Reply = { type: 'readDone'; id: number; out: TensorReadResult[] } | { type: 'readError'; id: number; name: string; message: string };

export class ReadAhead {
  private next: { b: number; result: Promise<TensorReadResult[]> } | null = null;
  private ids = 0;
  /** The worker exited (crashed or closed): no more reads ahead. */
  private gone = false;
  /** Blocks take() returned from a read ahead (not read directly). */
  served = 0;

  private constructor(
    private readonly cfg: ModelConfig,
    private readonly ckpt: Checkpoint,
    private readonly worker: Worker | null,
  ) {}

  /** `on` false (or no worker script in this build): take() reads directly, as before. */
  static create(cfg: ModelConfig, ckpt: Checkpoint, on: boolean): ReadAhead {
    const script = on ? workerScriptPath() : undefined;
    const worker = script ? spawnWorker(script) : null;
    worker?.unref(); // an idle reader does not keep the engine alive
    return new ReadAhead(cfg, ckpt, worker);
  }

  /** Starts reading block b's tensors (nothing past the last block, nothing while another read is pending). */
  start(b: number): void {
    const w = this.worker;
    if (!w || this.gone || b >= this.cfg.numLayers || this.next) return;
    const reads: TensorRead[] = blockTensorSuffixes(this.cfg, b).map((s) => {
      const e = this.ckpt.entry(`model.layers.${b}.${s}`);
      return { name: e.name, file: e.file, offset: e.offset, byteLength: e.byteLength, dtype: e.dtype };
    });
    const id = ++this.ids;
    const result = new Promise<TensorReadResult[]>((resolve, reject) => {
      const onMessage = (m: Reply) => {
        if (m.id !== id) return;
        done();
        if (m.type === 'readDone') resolve(m.out);
        else reject(Object.assign(new Error(m.message), { name: m.name }));
      };
      const onError = (e: Error) => {
        done();
        this.gone = true;
        reject(e);
      };
      const onExit = (code: number) => onError(new Error(`the read-ahead worker exited (code ${code})`));
      const done = () => {
        w.off('message', onMessage);
        w.off('error', onError);
        w.off('exit', onExit);
        if (!this.gone) w.unref(); // (closing: terminate() needs the loop until the exit settles it)
      };
      w.on('message', onMessage);
      w.on('error', onError);
      w.on('exit', onExit);
      w.ref(); // keep the process alive until the reply
      w.postMessage({ type: 'read', id, reads });
    });
    result.catch(() => undefined); // taken (or dropped) by take(); a failure there reads directly
    this.next = { b, result };
  }

  /**
   * Block b's weights: from the read started for it, checked as loadBlockWeights checks them; else (none started, or
   * the worker failed) read directly, which raises the checkpoint's own error for a bad file.
   */
  async take(b: number, read: WeightsProvider): Promise<BlockWeights> {
    const pending = this.next?.b === b ? this.next.result : null;
    this.next = null;
    const got = pending ? await pending.catch(() => null) : null;
    if (!got) return loadBlockWeights(this.cfg, b, read);
    const shapes = expectedShapes(this.cfg, b);
    const out: BlockWeights = {};
    for (const r of got) {
      if (r.firstNonFinite >= 0) assertFiniteWeights(r.data, r.name); // throws, naming the tensor and the index
      const shape = shapes.get(r.name);
      if (shape && r.data.length !== shape.reduce((a, d) => a * d, 1)) return loadBlockWeights(this.cfg, b, read); // the direct read's error
      out[r.name.slice(`model.layers.${b}.`.length)] = r.data;
    }
    this.served++;
    return out;
  }

  async close(): Promise<void> {
    this.next = null;
    this.gone = true;
    this.worker?.ref(); // an unref'd worker's exit would not keep the process up to settle terminate()
    await this.worker?.terminate();
  }
}
