// Safetensors dtypes: sizes and bit-exact conversions between float32 and the narrow float formats
// (IEEE binary16, bfloat16, OCP FP8 E4M3FN). Every encoder works on float32 *bits* and rounds to
// nearest, ties to even. Array versions read/write through Uint32Array views so NaN payloads and
// the sign of zero survive (a JS number round trip may canonicalise NaN).
//
// Why float32 first, even for a float64 JS number: rounding f64 → f32 → f16 equals rounding
// f64 → f16 directly, because 24 ≥ 2·11 + 2 (double rounding is innocuous when p ≥ 2q + 2);
// bf16 (q = 8) and e4m3 (q = 4) satisfy it too. So `f32ToF16Bits(x)` is correctly rounded for any x.
//
// Byte order: safetensors is little-endian; typed arrays use host order. Every host we ship for
// (x64, arm64) is little-endian, and `assertLittleEndian` makes that explicit where it matters.

import type { Dtype } from '../../protocol/messages';

export type { Dtype };

/** Bytes per element of each safetensors dtype. */
export const DTYPE_BYTES: Readonly<Record<Dtype, number>> = {
  F64: 8,
  F32: 4,
  F16: 2,
  BF16: 2,
  I64: 8,
  I32: 4,
  I16: 2,
  I8: 1,
  U8: 1,
  F8_E4M3: 1,
  BOOL: 1,
};

export const ALL_DTYPES = Object.keys(DTYPE_BYTES) as Dtype[];

export function isDtype(s: unknown): s is Dtype {
  return typeof s === 'string' && Object.hasOwn(DTYPE_BYTES, s);
}

export function dtypeBytes(dtype: Dtype): number {
  return DTYPE_BYTES[dtype];
}

let endianChecked = false;
export function assertLittleEndian(): void {
  if (endianChecked) return;
  if (new Uint8Array(new Uint16Array([1]).buffer)[0] !== 1) throw new Error('big-endian hosts are not supported (safetensors is little-endian)');
  endianChecked = true;
}

const scratchF32 = new Float32Array(1);
const scratchU32 = new Uint32Array(scratchF32.buffer);

function f32Bits(x: number): number {
  scratchF32[0] = x;
  return scratchU32[0];
}

function bitsToF32(b: number): number {
  scratchU32[0] = b;
  return scratchF32[0];
}

/**
 * Shift `mant` right by `shift` (1..31) with round-to-nearest-even. The caller guarantees that a
 * carry out of the mantissa field lands in the exponent field, which is exactly the right next value.
 */
function shiftRne(mant: number, shift: number): number {
  const r = mant >>> shift;
  const rem = mant & ((1 << shift) - 1);
  const half = 1 << (shift - 1);
  return rem > half || (rem === half && (r & 1) === 1) ? r + 1 : r;
}

// ── binary16 ─────────────────────────────────────────────────────────────────────────────────

/** float32 bit pattern → binary16 bit pattern (RNE; overflow → ±inf; NaN stays NaN, payload kept where it fits). */
export function f32BitsToF16Bits(b: number): number {
  const sign = (b >>> 16) & 0x8000;
  const exp = (b >>> 23) & 0xff;
  const mant = b & 0x7fffff;
  if (exp === 0xff) return mant === 0 ? sign | 0x7c00 : sign | 0x7c00 | (mant >>> 13 || 0x200);
  const e = exp - 127 + 15; // rebiased exponent
  if (e >= 31) return sign | 0x7c00;
  if (e <= 0) {
    // f16 subnormal (or zero): value·2^24 = (mant|implicit)·2^(e−14). Below 2^-25 everything rounds to 0
    // (at e = −10 the value·2^24 lies in [0.5, 1), which shiftRne still handles; e < −10 is < 0.5).
    if (e < -10) return sign;
    return sign | shiftRne(mant | 0x800000, 14 - e);
  }
  return sign | shiftRne((e << 23) | mant, 13); // carry into exponent gives 0x7c00 = inf, as IEEE wants
}

export function f32ToF16Bits(x: number): number {
  return f32BitsToF16Bits(f32Bits(x));
}

/** binary16 bit pattern → float32 bit pattern (exact). */
export function f16BitsToF32Bits(h: number): number {
  const sign = (h & 0x8000) << 16;
  const e = (h >>> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 31) return (sign | 0x7f800000 | (m << 13)) >>> 0;
  if (e !== 0) return (sign | ((e + 112) << 23) | (m << 13)) >>> 0;
  if (m === 0) return sign >>> 0;
  // subnormal: normalise (m·2^-24 with m < 1024)
  let shift = 0;
  let mm = m;
  while ((mm & 0x400) === 0) {
    mm <<= 1;
    shift++;
  }
  return (sign | ((113 - shift) << 23) | ((mm & 0x3ff) << 13)) >>> 0;
}

export function f16BitsToF32(h: number): number {
  return bitsToF32(f16BitsToF32Bits(h));
}

let f16Table: Uint32Array | undefined;
function f16ToF32BitsTable(): Uint32Array {
  if (!f16Table) {
    f16Table = new Uint32Array(65536);
    for (let h = 0; h < 65536; h++) f16Table[h] = f16BitsToF32Bits(h);
  }
  return f16Table;
}

export function f32ArrayToF16(src: Float32Array): Uint16Array {
  const bits = new Uint32Array(src.buffer, src.byteOffset, src.length);
  const out = new Uint16Array(src.length);
  for (let i = 0; i < bits.length; i++) out[i] = f32BitsToF16Bits(bits[i]);
  return out;
}

export function f16ToF32Array(src: Uint16Array): Float32Array {
  const table = f16ToF32BitsTable();
  const out = new Float32Array(src.length);
  const outBits = new Uint32Array(out.buffer);
  for (let i = 0; i < src.length; i++) outBits[i] = table[src[i]];
  return out;
}

// ── bfloat16 ─────────────────────────────────────────────────────────────────────────────────

export function f32BitsToBf16Bits(b: number): number {
  if ((b & 0x7f800000) === 0x7f800000 && (b & 0x7fffff) !== 0) return ((b >>> 16) | 0x40) & 0xffff; // quiet NaN, sign kept
  return (((b >>> 0) + 0x7fff + ((b >>> 16) & 1)) >>> 16) & 0xffff; // RNE; overflow carries into inf
}

export function f32ToBf16Bits(x: number): number {
  return f32BitsToBf16Bits(f32Bits(x));
}

export function bf16BitsToF32(h: number): number {
  return bitsToF32((h & 0xffff) << 16);
}

export function f32ArrayToBf16(src: Float32Array): Uint16Array {
  const bits = new Uint32Array(src.buffer, src.byteOffset, src.length);
  const out = new Uint16Array(src.length);
  for (let i = 0; i < bits.length; i++) out[i] = f32BitsToBf16Bits(bits[i]);
  return out;
}

export function bf16ToF32Array(src: Uint16Array): Float32Array {
  const out = new Float32Array(src.length);
  const outBits = new Uint32Array(out.buffer);
  for (let i = 0; i < src.length; i++) outBits[i] = src[i] << 16;
  return out;
}

// ── FP8 E4M3FN (OCP) ─────────────────────────────────────────────────────────────────────────
// 1 sign, 4 exponent (bias 7), 3 mantissa bits. No infinities; S.1111.111 is NaN; max ±448;
// subnormals m·2^-9. Encoding saturates: |x| > 448 (and ±inf) → ±448, as ONNX Cast(saturate=1) does.

export const F8E4M3_MAX = 448;
const F8_MAX_CODE = 0x7e;

export function f32BitsToF8E4M3(b: number): number {
  const sign = (b >>> 24) & 0x80;
  const exp = (b >>> 23) & 0xff;
  const mant = b & 0x7fffff;
  if (exp === 0xff) return mant === 0 ? sign | F8_MAX_CODE : sign | 0x7f;
  const e = exp - 127 + 7;
  if (e >= 16) return sign | F8_MAX_CODE;
  if (e <= 0) {
    // subnormal: value·2^9 = (mant|implicit)·2^(e−21); below 2^-10 rounds to zero
    if (e < -3) return sign;
    return sign | shiftRne(mant | 0x800000, 21 - e);
  }
  const r = shiftRne((e << 23) | mant, 20);
  return sign | Math.min(r, F8_MAX_CODE); // 0x7f would be NaN: saturate instead
}

export function f32ToF8E4M3(x: number): number {
  return f32BitsToF8E4M3(f32Bits(x));
}

export function f8E4M3ToF32(code: number): number {
  const s = code & 0x80 ? -1 : 1;
  const e = (code >>> 3) & 0xf;
  const m = code & 7;
  if (e === 15 && m === 7) return NaN;
  if (e === 0) return s * m * 2 ** -9;
  return s * (8 + m) * 2 ** (e - 10);
}

// Table of float32 bit patterns, so the sign of NaN (0x7F vs 0xFF) survives decoding.
let f8Table: Uint32Array | undefined;
function f8ToF32BitsTable(): Uint32Array {
  if (!f8Table) {
    f8Table = new Uint32Array(256);
    for (let c = 0; c < 256; c++) f8Table[c] = (c & 0x7f) === 0x7f ? (c & 0x80 ? 0xffc00000 : 0x7fc00000) : f32Bits(f8E4M3ToF32(c));
  }
  return f8Table;
}

export function f32ArrayToF8E4M3(src: Float32Array): Uint8Array {
  const bits = new Uint32Array(src.buffer, src.byteOffset, src.length);
  const out = new Uint8Array(src.length);
  for (let i = 0; i < bits.length; i++) out[i] = f32BitsToF8E4M3(bits[i]);
  return out;
}

export function f8E4M3ToF32Array(src: Uint8Array): Float32Array {
  const table = f8ToF32BitsTable();
  const out = new Float32Array(src.length);
  const outBits = new Uint32Array(out.buffer);
  for (let i = 0; i < src.length; i++) outBits[i] = table[src[i]];
  return out;
}

// ── float64 ──────────────────────────────────────────────────────────────────────────────────

export function f64ToF32Array(src: Float64Array): Float32Array {
  return new Float32Array(src); // element conversion rounds to nearest even (ECMA-262 ToFloat32)
}
