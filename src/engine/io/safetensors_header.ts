// Strict validation of a safetensors header (the JSON after the 8-byte length prefix).
// Pure: bytes in, entries out, so the hostile-input tests can exercise it without any I/O.
// The layout rules mirror huggingface/safetensors' own checks (offsets sorted, contiguous,
// starting at 0 and ending exactly at the end of the file), plus a few it leaves implicit.

import { ProtocolError } from '../../protocol/rpc';
import { ErrorCode } from '../../protocol/messages';
import { DTYPE_BYTES, isDtype, type Dtype } from './dtypes';

/** Largest header we accept (huggingface/safetensors uses the same 100 MB bound). */
export const MAX_HEADER_BYTES = 100_000_000;
/** Smallest header: safetensors writers pad the JSON to 8 bytes ("{}" + 6 spaces). */
export const MIN_HEADER_BYTES = 8;

export interface TensorEntry {
  name: string;
  dtype: Dtype;
  shape: number[];
  /** Absolute byte offset of the tensor's data in its file. */
  offset: number;
  byteLength: number;
  /** Number of elements (prod(shape); 1 for a scalar). */
  numel: number;
}

export interface ParsedHeader {
  entries: TensorEntry[];
  metadata: Record<string, string>;
  /** Absolute offset where the data section starts (8 + header length). */
  dataStart: number;
}

export function badCheckpoint(file: string, what: string, tensor?: string, hint?: string): ProtocolError {
  const where = tensor === undefined ? file : `${file}: ${tensor}`;
  const subject = tensor === undefined ? file : `${file}, tensor "${tensor}"`;
  return new ProtocolError(
    ErrorCode.BadCheckpoint,
    `bad safetensors file ${subject}: ${what}`,
    where,
    hint ?? 'the file is corrupt, truncated or not a safetensors file; re-download or re-export it',
  );
}

/** Reads the little-endian u64 header length; a value beyond 2^53 comes back as Infinity. */
export function readHeaderLength(prefix: Uint8Array): number {
  const view = new DataView(prefix.buffer, prefix.byteOffset, 8);
  const lo = view.getUint32(0, true);
  const hi = view.getUint32(4, true);
  return hi >= 0x200000 ? Infinity : hi * 2 ** 32 + lo;
}

/** Checks the header length against the file size before any header byte is read. */
export function checkHeaderLength(file: string, headerLen: number, fileSize: number): void {
  if (fileSize < 8) throw badCheckpoint(file, `file is ${fileSize} bytes, too small to hold the 8-byte header length`);
  const shown = Number.isFinite(headerLen) ? String(headerLen) : '> 2^53';
  if (headerLen < MIN_HEADER_BYTES) throw badCheckpoint(file, `header length ${shown} is below the minimum of ${MIN_HEADER_BYTES} bytes`);
  if (headerLen > MAX_HEADER_BYTES) throw badCheckpoint(file, `header length ${shown} exceeds the ${MAX_HEADER_BYTES}-byte limit`);
  if (headerLen > fileSize - 8) throw badCheckpoint(file, `header length ${shown} runs past the end of the file (${fileSize} bytes): truncated or not safetensors`);
}

// ignoreBOM keeps a leading U+FEFF in the text, so JSON.parse rejects it as the Rust reference does.
const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/** Plain assignment of "__proto__" would set the prototype instead of a key: define it. */
export function setOwn<T>(obj: Record<string, T>, key: string, value: T): void {
  Object.defineProperty(obj, key, { value, enumerable: true, writable: true, configurable: true });
}

function isPlainObject(x: unknown): x is Record<string, unknown> {
  return typeof x === 'object' && x !== null && !Array.isArray(x);
}

function isNonNegInt(x: unknown): x is number {
  return typeof x === 'number' && Number.isSafeInteger(x) && x >= 0;
}

/**
 * Parses and validates the header JSON. `fileSize` is the whole file's size; the data section
 * must be covered exactly by the tensors (no gaps, no overlaps, no trailing bytes).
 */
export function parseHeader(file: string, headerBytes: Uint8Array, fileSize: number): ParsedHeader {
  const dataStart = 8 + headerBytes.length;
  const dataSize = fileSize - dataStart;
  let text: string;
  try {
    text = utf8.decode(headerBytes);
  } catch {
    throw badCheckpoint(file, 'header is not valid UTF-8');
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw badCheckpoint(file, `header is not valid JSON (${e instanceof Error ? e.message : String(e)})`);
  }
  if (!isPlainObject(json)) throw badCheckpoint(file, `header must be a JSON object, got ${Array.isArray(json) ? 'an array' : json === null ? 'null' : typeof json}`);

  const metadata: Record<string, string> = {};
  const entries: TensorEntry[] = [];
  for (const [name, raw] of Object.entries(json)) {
    if (name === '__metadata__') {
      if (!isPlainObject(raw)) throw badCheckpoint(file, '"__metadata__" must be an object of string values');
      for (const [k, v] of Object.entries(raw)) {
        if (typeof v !== 'string') throw badCheckpoint(file, `"__metadata__" value for key "${k}" must be a string, got ${v === null ? 'null' : typeof v}`);
        setOwn(metadata, k, v);
      }
      continue;
    }
    entries.push(parseEntry(file, name, raw, dataStart));
  }
  checkLayout(file, entries, dataStart, dataSize);
  return { entries, metadata, dataStart };
}

function parseEntry(file: string, name: string, raw: unknown, dataStart: number): TensorEntry {
  if (!isPlainObject(raw)) throw badCheckpoint(file, 'entry must be an object with dtype, shape and data_offsets', name);
  const { dtype, shape, data_offsets: offs } = raw;
  if (typeof dtype !== 'string') throw badCheckpoint(file, `"dtype" must be a string, got ${JSON.stringify(dtype) ?? 'nothing'}`, name);
  if (!isDtype(dtype)) {
    throw new ProtocolError(
      ErrorCode.UnsupportedDtype,
      `unsupported dtype "${dtype.slice(0, 40)}" for tensor "${name}" in ${file}`,
      `${file}: ${name}`,
      `supported dtypes: ${Object.keys(DTYPE_BYTES).join(', ')}`,
    );
  }
  if (!Array.isArray(shape)) throw badCheckpoint(file, '"shape" must be an array of non-negative integers', name);
  for (const d of shape) {
    if (!isNonNegInt(d)) throw badCheckpoint(file, `"shape" has an invalid dimension ${JSON.stringify(d)} (must be a non-negative integer)`, name);
  }
  if (!Array.isArray(offs) || offs.length !== 2 || !isNonNegInt(offs[0]) || !isNonNegInt(offs[1])) {
    throw badCheckpoint(file, `"data_offsets" must be [begin, end] with non-negative integers, got ${JSON.stringify(offs)?.slice(0, 80)}`, name);
  }
  const [begin, end] = offs as [number, number];
  if (end < begin) throw badCheckpoint(file, `"data_offsets" [${begin}, ${end}] ends before it begins`, name);
  // BigInt: a product of huge dims must not wrap or lose precision and then "match" by accident.
  let numel = 1n;
  for (const d of shape as number[]) numel *= BigInt(d);
  const want = numel * BigInt(DTYPE_BYTES[dtype]);
  if (want !== BigInt(end - begin)) {
    throw badCheckpoint(file, `byte size ${end - begin} does not match dtype ${dtype} × shape [${(shape as number[]).join(', ')}] = ${want} bytes`, name);
  }
  return { name, dtype, shape: (shape as number[]).slice(), offset: dataStart + begin, byteLength: end - begin, numel: Number(numel) };
}

/** Tensors must tile the data section exactly: sorted by offset, each begins where the previous ends. */
function checkLayout(file: string, entries: TensorEntry[], dataStart: number, dataSize: number): void {
  const sorted = entries.slice().sort((a, b) => a.offset - b.offset || a.byteLength - b.byteLength);
  let pos = 0;
  let prev: TensorEntry | undefined;
  for (const e of sorted) {
    const begin = e.offset - dataStart;
    const end = begin + e.byteLength;
    if (begin > pos) {
      throw badCheckpoint(file, `data_offsets leave a hole of ${begin - pos} bytes before this tensor (data bytes ${pos}..${begin} belong to no tensor)`, e.name);
    }
    if (begin < pos) throw badCheckpoint(file, `data_offsets [${begin}, ${end}] overlap tensor "${prev?.name}" (which ends at ${pos})`, e.name);
    if (end > dataSize) {
      throw badCheckpoint(file, `data_offsets [${begin}, ${end}] run past the end of the data section (${dataSize} bytes): the file is truncated or the offsets are wrong`, e.name);
    }
    pos = end;
    prev = e;
  }
  if (pos !== dataSize) throw badCheckpoint(file, `${dataSize - pos} bytes at the end of the data section belong to no tensor`);
}
