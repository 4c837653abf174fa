// Safetensors writers. Both write to a temp file and rename it into place when complete:
// `writeSafetensorsAtomic` for tensors held in memory, `SafetensorsWriter` for outputs streamed
// tensor by tensor (or chunk by chunk), whose header is fixed up front from names, dtypes, shapes.

import * as fs from 'node:fs';
import { ProtocolError } from '../../protocol/rpc';
import { ErrorCode } from '../../protocol/messages';
import { DTYPE_BYTES, isDtype, type Dtype } from './dtypes';
import { MAX_HEADER_BYTES } from './safetensors_header';
import { atomicWriteFile, atomicWriteFileAsync, commitTemp, removeQuietly, tempPathFor, writeAll, writeError } from './atomic';

export interface TensorSpec {
  name: string;
  dtype: Dtype;
  shape: readonly number[];
}

export interface TensorData extends TensorSpec {
  /** Little-endian element bytes; any view (Float32Array, Uint16Array of f16 bits, Uint8Array…). */
  data: ArrayBufferView;
}

function invalid(target: string, msg: string, tensor?: string): ProtocolError {
  return new ProtocolError(
    ErrorCode.InvalidParams,
    `cannot write ${target}${tensor === undefined ? '' : `, tensor "${tensor}"`}: ${msg}`,
    tensor === undefined ? target : `${target}: ${tensor}`,
  );
}

/** Byte size of a tensor; throws for bad dtypes or dims. */
export function tensorByteLength(target: string, spec: TensorSpec): number {
  if (!isDtype(spec.dtype)) throw invalid(target, `unknown dtype ${JSON.stringify(spec.dtype)}`, spec.name);
  let n = DTYPE_BYTES[spec.dtype];
  for (const d of spec.shape) {
    if (!Number.isSafeInteger(d) || d < 0) throw invalid(target, `invalid dimension ${d} in shape [${spec.shape.join(', ')}]`, spec.name);
    n *= d;
  }
  if (!Number.isSafeInteger(n)) throw invalid(target, `shape [${spec.shape.join(', ')}] is too large`, spec.name);
  return n;
}

/**
 * Header bytes (8-byte length prefix + JSON padded with spaces so the data starts 8-aligned) and
 * each tensor's byte length. Tensors are laid out in the order given.
 */
export function buildHeader(target: string, specs: readonly TensorSpec[], metadata?: Record<string, string>): { header: Uint8Array; sizes: number[] } {
  // Null prototype: a tensor (or metadata key) named "__proto__" must become a key, not a prototype.
  const json: Record<string, unknown> = Object.create(null) as Record<string, unknown>;
  if (metadata && Object.keys(metadata).length) {
    const meta: Record<string, string> = Object.create(null) as Record<string, string>;
    for (const [k, v] of Object.entries(metadata)) {
      if (typeof v !== 'string') throw invalid(target, `metadata value for "${k}" must be a string`);
      meta[k] = v;
    }
    json.__metadata__ = meta;
  }
  const sizes: number[] = [];
  let pos = 0;
  for (const s of specs) {
    if (typeof s.name !== 'string' || s.name === '__metadata__') throw invalid(target, `invalid tensor name ${JSON.stringify(s.name)}`);
    if (Object.hasOwn(json, s.name)) throw invalid(target, 'duplicate tensor name', s.name);
    const size = tensorByteLength(target, s);
    json[s.name] = { dtype: s.dtype, shape: [...s.shape], data_offsets: [pos, pos + size] };
    sizes.push(size);
    pos += size;
  }
  const body = Buffer.from(JSON.stringify(json), 'utf8');
  const padded = Math.ceil(body.length / 8) * 8;
  if (padded > MAX_HEADER_BYTES) throw invalid(target, `header would be ${padded} bytes, above the ${MAX_HEADER_BYTES}-byte limit readers accept`);
  const header = new Uint8Array(8 + padded).fill(0x20);
  new DataView(header.buffer).setBigUint64(0, BigInt(padded), true);
  header.set(body, 8);
  return { header, sizes };
}

/** Writes a complete safetensors file atomically (temp file, fsync, rename). */
export function writeSafetensorsAtomic(target: string, tensors: readonly TensorData[], metadata?: Record<string, string>): void {
  const w = SafetensorsWriter.create(target, tensors, metadata);
  try {
    for (const t of tensors) w.writeTensor(t.name, t.data);
    w.finish();
  } catch (e) {
    w.abort();
    throw e;
  }
}

/** writeSafetensorsAtomic off the main thread (io/atomic.ts atomicWriteFileAsync); the tensors must not change until it settles. */
export async function writeSafetensorsAtomicAsync(target: string, tensors: readonly TensorData[], metadata?: Record<string, string>): Promise<void> {
  const { header, sizes } = buildHeader(target, tensors, metadata);
  tensors.forEach((t, i) => {
    if (t.data.byteLength !== sizes[i])
      throw new ProtocolError(
        ErrorCode.ShapeMismatch,
        `cannot write ${target}, tensor "${t.name}": got ${t.data.byteLength} bytes, ${t.dtype} [${t.shape.join(', ')}] needs ${sizes[i]}`,
        `${target}: ${t.name}`,
      );
  });
  await atomicWriteFileAsync(target, [header, ...tensors.map((t) => t.data)]);
}

/**
 * Streams a safetensors file: the header is written at creation; tensor data must then arrive in
 * the declared order, whole (`writeTensor`) or in pieces (`writeChunk`). Nothing appears at the
 * target path until `finish()`; `abort()` (or any failed write) removes the temp file.
 */
export class SafetensorsWriter {
  private index = 0;
  private writtenInCurrent = 0;
  private fd: number | undefined;

  private constructor(
    readonly target: string,
    readonly tempPath: string,
    fd: number,
    private readonly specs: readonly TensorSpec[],
    private readonly sizes: number[],
  ) {
    this.fd = fd;
  }

  static create(target: string, specs: readonly TensorSpec[], metadata?: Record<string, string>): SafetensorsWriter {
    const { header, sizes } = buildHeader(target, specs, metadata);
    const tmp = tempPathFor(target);
    let fd: number;
    try {
      fd = fs.openSync(tmp, 'wx');
    } catch (e) {
      throw writeError(target, e, 'create');
    }
    const w = new SafetensorsWriter(
      target,
      tmp,
      fd,
      specs.map((s) => ({ name: s.name, dtype: s.dtype, shape: [...s.shape] })),
      sizes,
    );
    w.guard(() => writeAll(fd, target, header));
    return w;
  }

  /** Name of the tensor whose data is expected next, or undefined when all are written. */
  get nextTensor(): string | undefined {
    return this.specs[this.index]?.name;
  }

  /** Writes the whole data of tensor `name`, which must be the next one declared. */
  writeTensor(name: string, data: ArrayBufferView): void {
    this.skipEmptyBefore(name);
    const spec = this.specs[this.index];
    if (spec?.name === name && this.writtenInCurrent === 0 && data.byteLength !== this.sizes[this.index]) {
      throw this.fail(
        new ProtocolError(
          ErrorCode.ShapeMismatch,
          `cannot write ${this.target}, tensor "${name}": got ${data.byteLength} bytes, ${spec.dtype} [${spec.shape.join(', ')}] needs ${this.sizes[this.index]}`,
          `${this.target}: ${name}`,
        ),
      );
    }
    if (spec?.name === name && this.writtenInCurrent !== 0) throw this.fail(invalid(this.target, 'writeTensor after a partial writeChunk', name));
    this.writeChunk(name, data);
  }

  /** Appends bytes of tensor `name`, which must be the one currently being written. */
  writeChunk(name: string, data: ArrayBufferView): void {
    const fd = this.openFd();
    this.skipEmptyBefore(name);
    const spec = this.specs[this.index];
    if (!spec) throw this.fail(invalid(this.target, 'all declared tensors are already written', name));
    if (spec.name !== name) throw this.fail(invalid(this.target, `out of order: expected data for "${spec.name}" next`, name));
    const size = this.sizes[this.index];
    if (this.writtenInCurrent + data.byteLength > size) {
      throw this.fail(
        new ProtocolError(
          ErrorCode.ShapeMismatch,
          `cannot write ${this.target}, tensor "${name}": ${this.writtenInCurrent + data.byteLength} bytes given, ${spec.dtype} [${spec.shape.join(', ')}] needs ${size}`,
          `${this.target}: ${name}`,
        ),
      );
    }
    this.guard(() => writeAll(fd, this.target, data));
    this.writtenInCurrent += data.byteLength;
    if (this.writtenInCurrent === size) {
      this.index++;
      this.writtenInCurrent = 0;
    }
  }

  /** Zero-byte tensors need no data: step over them when the caller moves on (or finishes). */
  private skipEmptyBefore(name: string | undefined): void {
    while (this.index < this.specs.length && this.sizes[this.index] === 0 && this.specs[this.index].name !== name) this.index++;
  }

  /** fsyncs and renames into place; throws if some declared tensor is missing or incomplete. */
  finish(): void {
    const fd = this.openFd();
    this.skipEmptyBefore(undefined);
    if (this.index < this.specs.length) {
      throw this.fail(
        invalid(this.target, `finish() before all data was written (next: "${this.specs[this.index].name}", ${this.writtenInCurrent}/${this.sizes[this.index]} bytes)`),
      );
    }
    this.fd = undefined;
    commitTemp(fd, this.tempPath, this.target);
  }

  /** Discards the output: closes and removes the temp file. Safe to call more than once. */
  abort(): void {
    if (this.fd !== undefined) {
      try {
        fs.closeSync(this.fd);
      } catch {
        // already closed by the OS: nothing to do
      }
      this.fd = undefined;
    }
    removeQuietly(this.tempPath);
  }

  private openFd(): number {
    if (this.fd === undefined) throw invalid(this.target, 'the writer is already finished or aborted');
    return this.fd;
  }

  private fail(e: ProtocolError): ProtocolError {
    this.abort();
    return e;
  }

  private guard(f: () => void): void {
    try {
      f();
    } catch (e) {
      this.abort();
      throw e;
    }
  }
}

/**
 * Writes a Hugging Face `model.safetensors.index.json` (atomically) for shards written with the
 * writers above: `weightMap` maps each tensor to its shard's file name in the same folder.
 */
export function writeShardIndex(target: string, weightMap: Record<string, string>, totalSize: number, metadata: Record<string, unknown> = {}): void {
  for (const [t, f] of Object.entries(weightMap)) {
    if (typeof f !== 'string' || f === '' || /[\\/]/.test(f)) throw invalid(target, `shard for the tensor must be a plain file name, got ${JSON.stringify(f)}`, t);
  }
  const sorted = Object.keys(weightMap).sort();
  const wm: Record<string, string> = Object.create(null) as Record<string, string>;
  for (const k of sorted) wm[k] = weightMap[k];
  atomicWriteFile(target, `${JSON.stringify({ metadata: { ...metadata, total_size: totalSize }, weight_map: wm }, null, 2)}\n`);
}
