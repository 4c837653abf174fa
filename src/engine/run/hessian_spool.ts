// The Hessian cache of the block in progress (hessians/block-N.safetensors, read back by re-quantize),
// written to disk pass by pass instead of held in memory until the block commits: a 7B block's is 1.4 GB
// of float32, a 70B block's 4.1 GB, and the commit runs while the next block computes, so holding it would
// keep two blocks' worth alive. The data goes straight into the output's temp file behind a reserved
// header; the commit writes the header (JSON padded with spaces to the reserved size, as safetensors
// allows), fsyncs and renames. A header that outgrows its reservation is copied into a fresh file instead.

import * as fs from 'node:fs';
import { dirname } from 'node:path';
import { promisify } from 'node:util';
import { atomicWriteFileAsync, fsyncDir, removeQuietly, tempPathFor, writeAll, writeError } from '../io/atomic';
import { buildHeader, type TensorData, type TensorSpec } from '../io/safetensors_writer';

const fsyncAsync = promisify(fs.fsync);
const writeAsync = promisify(fs.write);

/** Writes the whole view at file offset `at`, looping over short writes. */
async function writeAllAt(fd: number, data: ArrayBufferView, at: number): Promise<void> {
  const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  for (let done = 0; done < bytes.length; ) done += (await writeAsync(fd, bytes, done, Math.min(bytes.length - done, 1 << 30), at + done)).bytesWritten;
}
const closeAsync = promisify(fs.close);

/** Header bytes reserved for `maxTensors` entries ({"name":{"dtype":"F32","shape":[n,n],"data_offsets":[a,b]}}). */
export const reservedHeaderBytes = (maxTensors: number): number => Math.ceil((512 + 192 * maxTensors) / 8) * 8;

export class HessianSpool {
  private fd: number | undefined;
  private readonly temp: string;
  private readonly specs: TensorSpec[] = [];
  private bytes = 0;
  private readonly reserved: number;
  /** The data writes in flight, in order; the first failure. */
  private writing: Promise<void> = Promise.resolve();
  private failure: Error | undefined;

  constructor(
    readonly target: string,
    maxTensors: number,
  ) {
    this.temp = tempPathFor(target);
    this.reserved = reservedHeaderBytes(maxTensors);
  }

  get count(): number {
    return this.specs.length;
  }

  /**
   * Appends the tensors' data to the output's temp file, written on the thread pool while the caller goes on (the
   * layers of the pass): the caller must not change the arrays afterwards. A failed write is thrown by the next
   * add() or by commitTo().
   */
  add(tensors: readonly TensorData[]): void {
    if (this.failure) throw this.failure;
    if (this.fd === undefined) {
      try {
        this.fd = fs.openSync(this.temp, 'wx');
      } catch (e) {
        throw writeError(this.target, e, 'create');
      }
      writeAll(this.fd, this.target, new Uint8Array(8 + this.reserved).fill(0x20)); // the header's place
    }
    const fd = this.fd;
    for (const t of tensors) {
      const at = 8 + this.reserved + this.bytes;
      this.writing = this.writing.then(() => (this.failure ? undefined : writeAllAt(fd, t.data, at))).catch((e) => void (this.failure ??= writeError(this.target, e, 'write')));
      this.specs.push({ name: t.name, dtype: t.dtype, shape: [...t.shape] });
      this.bytes += t.data.byteLength;
    }
  }

  /** Writes the header, fsyncs and renames into place, off the main thread where it can. */
  async commitTo(metadata?: Record<string, string>): Promise<void> {
    await this.writing;
    if (this.failure) {
      this.dispose();
      throw this.failure;
    }
    const { header } = buildHeader(this.target, this.specs, metadata);
    if (this.fd === undefined) return atomicWriteFileAsync(this.target, [header]);
    const fd = this.fd;
    this.fd = undefined;
    const json = header.subarray(8);
    try {
      if (json.length > this.reserved) {
        await closeAsync(fd);
        await atomicWriteFileAsync(this.target, [header, { file: this.temp, offset: 8 + this.reserved, length: this.bytes }]);
        removeQuietly(this.temp);
        return;
      }
      const h = new Uint8Array(8 + this.reserved).fill(0x20);
      new DataView(h.buffer).setBigUint64(0, BigInt(this.reserved), true);
      h.set(json, 8); // trailing spaces: JSON whitespace
      fs.writeSync(fd, h, 0, h.length, 0);
      try {
        await fsyncAsync(fd);
      } finally {
        await closeAsync(fd);
      }
      await fs.promises.rename(this.temp, this.target);
    } catch (e) {
      removeQuietly(this.temp);
      throw writeError(this.target, e, 'write');
    }
    fsyncDir(dirname(this.target));
  }

  /** Closes and removes the temp file (a failed or cancelled block). Safe to call more than once. */
  dispose(): void {
    const fd = this.fd;
    this.fd = undefined;
    this.failure ??= new Error('disposed'); // writes not started yet are skipped
    if (fd !== undefined) void this.writing.finally(() => fs.closeSync(fd)); // not under a write in flight
    removeQuietly(this.temp);
  }
}
