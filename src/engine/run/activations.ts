// Calibration activations of one block boundary: N records (one per calibration window) of
// `recordLen` float32 values (ctx × hidden). Held in memory while they fit the budget, otherwise
// in a scratch file read and written one record at a time (positioned I/O), so the pipeline's
// memory stays ~one block's weights + a batch of activations whatever the model size.

import { closeSync, openSync, readSync, rmSync, writeSync } from 'node:fs';
import { atomicWriteFileAsync, commitTemp, tempPathFor, writeAll } from '../io/atomic';

export interface ActivationStore {
  readonly count: number;
  readonly recordLen: number;
  readonly spilled: boolean;
  get(i: number): Float32Array;
  set(i: number, data: Float32Array): void;
  /** Writes every record to `file` (temp + fsync + rename: the file appears complete or not at all). */
  persist(file: string): void;
  /** persist() off the main thread where the records are in memory (the store must not change until it settles). */
  persistAsync(file: string): Promise<void>;
  dispose(): void;
}

class MemoryStore implements ActivationStore {
  readonly spilled = false;
  private readonly data: Float32Array;
  constructor(
    readonly count: number,
    readonly recordLen: number,
  ) {
    this.data = new Float32Array(count * recordLen);
  }
  get(i: number): Float32Array {
    return this.data.subarray(i * this.recordLen, (i + 1) * this.recordLen);
  }
  set(i: number, d: Float32Array): void {
    if (d.length !== this.recordLen) throw new RangeError(`activation record has ${d.length} values, expected ${this.recordLen}`);
    this.data.set(d, i * this.recordLen);
  }
  persist(file: string): void {
    writeRecordsAtomic(file, this.count, (i) => this.get(i));
  }
  persistAsync(file: string): Promise<void> {
    return atomicWriteFileAsync(file, [this.data]); // the records back to back, as writeRecordsAtomic writes them
  }
  dispose(): void {}
}

class FileStore implements ActivationStore {
  readonly spilled = true;
  private fd: number | undefined;
  constructor(
    readonly count: number,
    readonly recordLen: number,
    private readonly file: string,
  ) {
    this.fd = openSync(file, 'w+');
  }
  private get bytes(): number {
    return this.recordLen * 4;
  }
  get(i: number): Float32Array {
    const out = new Float32Array(this.recordLen);
    const u8 = new Uint8Array(out.buffer);
    let done = 0;
    while (done < u8.length) {
      const n = readSync(this.fd!, u8, done, u8.length - done, i * this.bytes + done);
      if (n === 0) throw new Error(`activation scratch ${this.file}: record ${i} was never written`);
      done += n;
    }
    return out;
  }
  set(i: number, d: Float32Array): void {
    if (d.length !== this.recordLen) throw new RangeError(`activation record has ${d.length} values, expected ${this.recordLen}`);
    const u8 = new Uint8Array(d.buffer, d.byteOffset, d.byteLength);
    let done = 0;
    while (done < u8.length) done += writeSync(this.fd!, u8, done, u8.length - done, i * this.bytes + done);
  }
  persist(file: string): void {
    writeRecordsAtomic(file, this.count, (i) => this.get(i));
  }
  async persistAsync(file: string): Promise<void> {
    this.persist(file); // spilled: the records are read back from the scratch file anyway
  }
  dispose(): void {
    if (this.fd !== undefined) closeSync(this.fd);
    this.fd = undefined;
    rmSync(this.file, { force: true });
  }
}

function writeRecordsAtomic(file: string, count: number, record: (i: number) => Float32Array): void {
  const tmp = tempPathFor(file);
  const fd = openSync(tmp, 'w');
  try {
    for (let i = 0; i < count; i++) writeAll(fd, file, record(i));
  } catch (e) {
    closeSync(fd);
    rmSync(tmp, { force: true });
    throw e;
  }
  commitTemp(fd, tmp, file); // fsync, rename; removes the temp file on failure
}

/**
 * A store of `count` records; spilled to `scratchFile` when count·recordLen·4 bytes exceed
 * `budgetBytes` (the pipeline gives each of its two live stores half the memory budget).
 */
export function createActivationStore(count: number, recordLen: number, budgetBytes: number, scratchFile: string): ActivationStore {
  return count * recordLen * 4 <= budgetBytes ? new MemoryStore(count, recordLen) : new FileStore(count, recordLen, scratchFile);
}

/** Reads a persisted store back (the resume path). */
export function loadActivationStore(file: string, count: number, recordLen: number, budgetBytes: number, scratchFile: string): ActivationStore {
  const store = createActivationStore(count, recordLen, budgetBytes, scratchFile);
  const fd = openSync(file, 'r');
  try {
    const buf = new Float32Array(recordLen);
    const u8 = new Uint8Array(buf.buffer);
    for (let i = 0; i < count; i++) {
      let done = 0;
      while (done < u8.length) {
        const n = readSync(fd, u8, done, u8.length - done, i * u8.length + done);
        if (n === 0) throw new Error(`${file} is shorter than ${count} records of ${recordLen} values`);
        done += n;
      }
      store.set(i, buf);
    }
  } finally {
    closeSync(fd);
  }
  return store;
}
