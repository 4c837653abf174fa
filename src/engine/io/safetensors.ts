// Lazy safetensors reader: `open` reads only the 8-byte prefix and the header; each tensor is read
// on demand with positioned reads at its own offset, so getting one tensor of a 15 GB shard costs
// that tensor's bytes and nothing more.

import * as fs from 'node:fs';
import { ProtocolError } from '../../protocol/rpc';
import { ErrorCode } from '../../protocol/messages';
import { assertLittleEndian, bf16ToF32Array, f16ToF32Array, f64ToF32Array, type Dtype } from './dtypes';
import { badCheckpoint, checkHeaderLength, parseHeader, readHeaderLength, type TensorEntry } from './safetensors_header';

export type { TensorEntry } from './safetensors_header';

export type TypedArray = Float32Array | Float64Array | Int8Array | Uint8Array | Int16Array | Uint16Array | Int32Array | BigInt64Array;

/** readSync takes at most 2^31−1 bytes per call; stay well under it. */
const READ_CHUNK = 1 << 30;

/** Wraps an fs error (ENOENT, EACCES, EIO…) into a ProtocolError that names the file. */
export function ioError(file: string, e: unknown, doing: string): ProtocolError {
  if (e instanceof ProtocolError) return e;
  const code = (e as NodeJS.ErrnoException)?.code;
  const msg = e instanceof Error ? e.message : String(e);
  return new ProtocolError(ErrorCode.Io, `cannot ${doing} ${file}: ${code ?? msg}`, file, code === 'ENOENT' ? 'check the path' : undefined);
}

/** Reads exactly `length` bytes at `position` into `dst[dstOffset..]`; a short read means the file shrank. */
export function readFully(fd: number, file: string, dst: Uint8Array, dstOffset: number, length: number, position: number, tensor?: string): void {
  let done = 0;
  while (done < length) {
    const want = Math.min(READ_CHUNK, length - done);
    let n: number;
    try {
      n = fs.readSync(fd, dst, dstOffset + done, want, position + done);
    } catch (e) {
      throw ioError(file, e, 'read');
    }
    if (n === 0)
      throw badCheckpoint(file, `unexpected end of file at byte ${position + done} (wanted ${length - done} more bytes): the file is truncated or changed while open`, tensor);
    done += n;
  }
}

export class SafetensorsFile {
  /** Total bytes read from disk so far (header included): lets tests prove reads are lazy. */
  bytesRead = 0;
  private fd: number | undefined;
  private readonly byName: Map<string, TensorEntry>;

  private constructor(
    readonly path: string,
    fd: number,
    readonly size: number,
    readonly entries: readonly TensorEntry[],
    readonly metadata: Readonly<Record<string, string>>,
    readonly dataStart: number,
    headerBytesRead: number,
  ) {
    this.fd = fd;
    this.bytesRead = headerBytesRead;
    this.byName = new Map(entries.map((e) => [e.name, e]));
  }

  /** Opens and validates a file; throws ProtocolError (E_IO, E_BAD_CHECKPOINT, E_UNSUPPORTED_DTYPE). */
  static open(path: string): SafetensorsFile {
    assertLittleEndian();
    let fd: number;
    try {
      fd = fs.openSync(path, 'r');
    } catch (e) {
      throw ioError(path, e, 'open');
    }
    try {
      let size: number;
      try {
        const st = fs.fstatSync(fd);
        if (!st.isFile()) throw new ProtocolError(ErrorCode.Io, `cannot read ${path}: not a regular file`, path);
        size = st.size;
      } catch (e) {
        throw ioError(path, e, 'stat');
      }
      if (size < 8) checkHeaderLength(path, 0, size);
      const prefix = new Uint8Array(8);
      readFully(fd, path, prefix, 0, 8, 0);
      const headerLen = readHeaderLength(prefix);
      checkHeaderLength(path, headerLen, size);
      const headerBytes = new Uint8Array(headerLen);
      readFully(fd, path, headerBytes, 0, headerLen, 8);
      const { entries, metadata, dataStart } = parseHeader(path, headerBytes, size);
      return new SafetensorsFile(path, fd, size, entries, metadata, dataStart, 8 + headerLen);
    } catch (e) {
      fs.closeSync(fd);
      throw e;
    }
  }

  has(name: string): boolean {
    return this.byName.has(name);
  }

  entry(name: string): TensorEntry {
    const e = this.byName.get(name);
    if (!e) throw new ProtocolError(ErrorCode.BadCheckpoint, `tensor "${name}" not found in ${this.path}`, `${this.path}: ${name}`);
    return e;
  }

  /** The tensor's raw little-endian bytes, in a fresh (8-byte aligned) buffer. */
  readBytes(name: string): Uint8Array {
    const e = this.entry(name);
    return this.readRange(name, 0, e.byteLength);
  }

  /** `length` bytes starting `start` bytes into the tensor's data (for row-wise streaming of huge tensors). */
  readRange(name: string, start: number, length: number): Uint8Array {
    const e = this.entry(name);
    if (!(start >= 0 && length >= 0 && start + length <= e.byteLength)) {
      throw new ProtocolError(
        ErrorCode.InvalidParams,
        `byte range [${start}, ${start + length}) is outside tensor "${name}" (${e.byteLength} bytes) in ${this.path}`,
        `${this.path}: ${name}`,
      );
    }
    const out = new Uint8Array(length);
    readFully(this.openFd(), this.path, out, 0, length, e.offset + start, name);
    this.bytesRead += length;
    return out;
  }

  /** The tensor as the typed array matching its dtype (F16/BF16 as Uint16Array bits, F8_E4M3/BOOL as Uint8Array). */
  readTyped(name: string): TypedArray {
    return bytesAsTyped(this.entry(name).dtype, this.readBytes(name));
  }

  /** F32/F16/BF16/F64 tensors widened/narrowed to float32; other dtypes throw E_UNSUPPORTED_DTYPE. */
  readFloat32(name: string): Float32Array {
    const e = this.entry(name);
    assertFloatDtype(this.path, e);
    return bytesToFloat32(e.dtype, this.readBytes(name));
  }

  /** Rows [rowStart, rowStart + rowCount) of a tensor (first dim = rows) as float32. */
  readRowsFloat32(name: string, rowStart: number, rowCount: number): Float32Array {
    const e = this.entry(name);
    assertFloatDtype(this.path, e);
    const rows = e.shape.length ? e.shape[0] : 1;
    if (!(Number.isInteger(rowStart) && Number.isInteger(rowCount) && rowStart >= 0 && rowCount >= 0 && rowStart + rowCount <= rows)) {
      throw new ProtocolError(
        ErrorCode.InvalidParams,
        `rows [${rowStart}, ${rowStart + rowCount}) are outside tensor "${name}" (${rows} rows) in ${this.path}`,
        `${this.path}: ${name}`,
      );
    }
    const rowBytes = rows === 0 ? 0 : e.byteLength / rows;
    return bytesToFloat32(e.dtype, this.readRange(name, rowStart * rowBytes, rowCount * rowBytes));
  }

  close(): void {
    if (this.fd !== undefined) {
      fs.closeSync(this.fd);
      this.fd = undefined;
    }
  }

  private openFd(): number {
    if (this.fd === undefined) throw new ProtocolError(ErrorCode.Internal, `${this.path} is closed`, this.path);
    return this.fd;
  }
}

export function isFloatDtype(dtype: Dtype): boolean {
  return dtype === 'F32' || dtype === 'F16' || dtype === 'BF16' || dtype === 'F64';
}

function assertFloatDtype(file: string, e: TensorEntry): void {
  if (!isFloatDtype(e.dtype)) {
    throw new ProtocolError(
      ErrorCode.UnsupportedDtype,
      `tensor "${e.name}" in ${file} has dtype ${e.dtype}, which cannot be read as float32 (F32, F16, BF16 and F64 can)`,
      `${file}: ${e.name}`,
      'read it with readBytes/readTyped instead',
    );
  }
}

/** `bytes` must start at an 8-aligned offset (fresh buffers from this module do). */
export function bytesAsTyped(dtype: Dtype, bytes: Uint8Array): TypedArray {
  const { buffer, byteOffset, byteLength } = bytes;
  switch (dtype) {
    case 'F32':
      return new Float32Array(buffer, byteOffset, byteLength / 4);
    case 'F64':
      return new Float64Array(buffer, byteOffset, byteLength / 8);
    case 'F16':
    case 'BF16':
      return new Uint16Array(buffer, byteOffset, byteLength / 2);
    case 'I16':
      return new Int16Array(buffer, byteOffset, byteLength / 2);
    case 'I32':
      return new Int32Array(buffer, byteOffset, byteLength / 4);
    case 'I64':
      return new BigInt64Array(buffer, byteOffset, byteLength / 8);
    case 'I8':
      return new Int8Array(buffer, byteOffset, byteLength);
    case 'U8':
    case 'BOOL':
    case 'F8_E4M3':
      return bytes;
  }
}

export function bytesToFloat32(dtype: Dtype, bytes: Uint8Array): Float32Array {
  const typed = bytesAsTyped(dtype, bytes);
  switch (dtype) {
    case 'F32':
      return typed as Float32Array;
    case 'F64':
      return f64ToF32Array(typed as Float64Array);
    case 'F16':
      return f16ToF32Array(typed as Uint16Array);
    case 'BF16':
      return bf16ToF32Array(typed as Uint16Array);
    default:
      throw new ProtocolError(ErrorCode.UnsupportedDtype, `dtype ${dtype} cannot be read as float32`);
  }
}
