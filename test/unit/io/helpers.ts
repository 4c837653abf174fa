// Shared test helpers: seeded randomness, temp folders, and a raw safetensors encoder that is
// independent of the code under test (hand-assembled header JSON, no padding rules of ours).
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { mulberry32 } from '../../../src/engine/util/random';

/** Seeded PRNG (mulberry32): deterministic test data. */
export const rng = mulberry32;

export function randomBytes(r: () => number, n: number): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = Math.floor(r() * 256);
  return b;
}

export function tmpDir(prefix: string): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), `lopro-io-${prefix}-`));
}

export function rmDir(dir: string): void {
  fs.rmSync(dir, { recursive: true, force: true });
}

/** Concatenates an 8-byte LE length, the header bytes as given, and the data. */
export function rawFile(headerText: string | Uint8Array, data: Uint8Array, declaredLen?: number): Uint8Array {
  const h = typeof headerText === 'string' ? Buffer.from(headerText, 'utf8') : headerText;
  const out = new Uint8Array(8 + h.length + data.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(declaredLen ?? h.length), true);
  out.set(h, 8);
  out.set(data, 8 + h.length);
  return out;
}

export interface RawTensor {
  name: string;
  dtype: string;
  shape: number[];
  bytes: Uint8Array;
}

/** A valid file from raw tensors laid out in order (header padded to 8 with spaces). */
export function rawSafetensors(tensors: RawTensor[], metadata?: Record<string, string>): Uint8Array {
  const header: Record<string, unknown> = {};
  if (metadata) header.__metadata__ = metadata;
  let pos = 0;
  for (const t of tensors) {
    header[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [pos, pos + t.bytes.length] };
    pos += t.bytes.length;
  }
  let text = JSON.stringify(header);
  while (Buffer.byteLength(text) % 8) text += ' ';
  const data = new Uint8Array(pos);
  let o = 0;
  for (const t of tensors) {
    data.set(t.bytes, o);
    o += t.bytes.length;
  }
  return rawFile(text, data);
}

/** Reference decoder: header JSON + byte slices, no validation beyond what is needed to slice. */
export function referenceDecode(file: Uint8Array): Map<string, { dtype: string; shape: number[]; bytes: Uint8Array }> {
  const n = Number(new DataView(file.buffer, file.byteOffset).getBigUint64(0, true));
  const header = JSON.parse(Buffer.from(file.subarray(8, 8 + n)).toString('utf8')) as Record<string, { dtype: string; shape: number[]; data_offsets: [number, number] }>;
  const out = new Map<string, { dtype: string; shape: number[]; bytes: Uint8Array }>();
  for (const [name, e] of Object.entries(header)) {
    if (name === '__metadata__') continue;
    out.set(name, { dtype: e.dtype, shape: e.shape, bytes: file.subarray(8 + n + e.data_offsets[0], 8 + n + e.data_offsets[1]) });
  }
  return out;
}

const scratch = new DataView(new ArrayBuffer(4)); // big-endian: bf16 bits are the high half of a float32

/** Float64 reference decoding of float dtypes from raw bytes (independent of src/engine/io/dtypes). */
export function referenceFloats(dtype: string, bytes: Uint8Array): Float64Array {
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const size = dtype === 'F64' ? 8 : dtype === 'F32' ? 4 : 2;
  const out = new Float64Array(bytes.length / size);
  for (let i = 0; i < out.length; i++) {
    if (dtype === 'F64') out[i] = dv.getFloat64(i * 8, true);
    else if (dtype === 'F32') out[i] = dv.getFloat32(i * 4, true);
    else if (dtype === 'BF16') {
      scratch.setUint16(0, dv.getUint16(i * 2, true));
      out[i] = scratch.getFloat32(0);
    } else {
      const h = dv.getUint16(i * 2, true);
      const s = h & 0x8000 ? -1 : 1,
        e = (h >> 10) & 31,
        m = h & 1023;
      out[i] = e === 31 ? (m ? NaN : s * Infinity) : e === 0 ? s * m * 2 ** -24 : s * (1 + m / 1024) * 2 ** (e - 15);
    }
  }
  return out;
}

/** Same float32 values (NaN == NaN, -0 vs 0 distinguished). */
export function sameFloats(a: Float32Array, b: Float64Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) {
    const x = a[i],
      y = Math.fround(b[i]);
    if (!(Object.is(x, y) || (Number.isNaN(x) && Number.isNaN(y)))) return false;
  }
  return true;
}

export function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && Buffer.compare(Buffer.from(a.buffer, a.byteOffset, a.length), Buffer.from(b.buffer, b.byteOffset, b.length)) === 0;
}
