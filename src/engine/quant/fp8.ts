// Rounding helpers for the mixed-precision parts of LoPRo (spec §1.3: U, V in FP8 E4M3, Σ and α in
// FP16). The bit-exact encoders live in io/dtypes.ts; here we only pair "encode" with "decode" so
// the quantizer works with the exact values the checkpoint will hold (what is used = what is stored).

import { f32ToF8E4M3, f8E4M3ToF32, f32ToF16Bits, f16BitsToF32, F8E4M3_MAX } from '../io/dtypes';

export { F8E4M3_MAX };

/** The FP8 E4M3 value nearest to x (saturating at ±448, as the encoder does). */
export function roundF8E4M3(x: number): number {
  return f8E4M3ToF32(f32ToF8E4M3(x));
}

/** The binary16 value nearest to x. */
export function roundF16(x: number): number {
  return f16BitsToF32(f32ToF16Bits(x));
}

/** Encodes every value to FP8 E4M3 codes and writes the decoded (rounded) values into `rounded`. */
export function encodeF8E4M3(vals: ArrayLike<number>, rounded?: Float64Array | Float32Array): Uint8Array {
  const codes = new Uint8Array(vals.length);
  for (let i = 0; i < vals.length; i++) {
    codes[i] = f32ToF8E4M3(vals[i]);
    if (rounded) rounded[i] = f8E4M3ToF32(codes[i]);
  }
  return codes;
}

/** Encodes to binary16 bit patterns and writes the decoded values into `rounded`. */
export function encodeF16(vals: ArrayLike<number>, rounded?: Float64Array | Float32Array): Uint16Array {
  const bits = new Uint16Array(vals.length);
  for (let i = 0; i < vals.length; i++) {
    bits[i] = f32ToF16Bits(vals[i]);
    if (rounded) rounded[i] = f16BitsToF32(bits[i]);
  }
  return bits;
}

export function decodeF8E4M3(codes: Uint8Array): Float64Array {
  const out = new Float64Array(codes.length);
  for (let i = 0; i < codes.length; i++) out[i] = f8E4M3ToF32(codes[i]);
  return out;
}

export function decodeF16(bits: Uint16Array): Float64Array {
  const out = new Float64Array(bits.length);
  for (let i = 0; i < bits.length; i++) out[i] = f16BitsToF32(bits[i]);
  return out;
}
