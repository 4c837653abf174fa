// Exhaustive checks of the narrow-float codecs against a float64 nearest-value reference.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  f32ToF16Bits,
  f16BitsToF32,
  f32ArrayToF16,
  f16ToF32Array,
  f32ToBf16Bits,
  bf16BitsToF32,
  f32ArrayToBf16,
  bf16ToF32Array,
  f32ToF8E4M3,
  f8E4M3ToF32,
  f32ArrayToF8E4M3,
  f8E4M3ToF32Array,
  DTYPE_BYTES,
  isDtype,
} from '../../../src/engine/io/dtypes';
import { mulberry32 } from '../../../src/engine/util/random';

/** Seeded PRNG (mulberry32). */
const rng = mulberry32;

// Reference values decoded from the format definitions in float64, independent of the codec.
function f16Ref(h: number): number {
  const s = h & 0x8000 ? -1 : 1,
    e = (h >> 10) & 31,
    m = h & 1023;
  if (e === 31) return m ? NaN : s * Infinity;
  return e === 0 ? s * m * 2 ** -24 : s * (1 + m / 1024) * 2 ** (e - 15);
}
function f8Ref(c: number): number {
  const s = c & 0x80 ? -1 : 1,
    e = (c >> 3) & 15,
    m = c & 7;
  if (e === 15 && m === 7) return NaN;
  return e === 0 ? s * m * 2 ** -9 : s * (1 + m / 8) * 2 ** (e - 7);
}
function bf16Ref(h: number): number {
  const s = h & 0x8000 ? -1 : 1,
    e = (h >> 7) & 255,
    m = h & 127;
  if (e === 255) return m ? NaN : s * Infinity;
  return e === 0 ? s * m * 2 ** -133 : s * (1 + m / 128) * 2 ** (e - 127);
}

/** Positive candidates (value, code) sorted by value; `overflow` is the value/code past the max (inf or saturation). */
function candidates(codes: number[], decode: (c: number) => number): { v: number[]; c: number[] } {
  const pairs = codes.map((c) => [decode(c), c] as const).filter(([v]) => Number.isFinite(v) && v >= 0 && !Object.is(v, -0));
  pairs.sort((a, b) => a[0] - b[0]);
  return { v: pairs.map((p) => p[0]), c: pairs.map((p) => p[1]) };
}

/** Nearest candidate code to |x| (ties → even code), sign applied by the caller. */
function nearest(x: number, cand: { v: number[]; c: number[] }): number {
  const { v, c } = cand;
  let lo = 0,
    hi = v.length - 1;
  if (x >= v[hi]) return c[hi];
  while (hi - lo > 1) {
    const mid = (lo + hi) >> 1;
    if (v[mid] <= x) lo = mid;
    else hi = mid;
  }
  const dl = x - v[lo],
    dh = v[hi] - x;
  if (dl < dh) return c[lo];
  if (dh < dl) return c[hi];
  return (c[lo] & 1) === 0 ? c[lo] : c[hi];
}

// f16: positive finite codes plus +inf as the "next value" 2^16 (code 0x7c00, even), so overflow ties go to inf.
const f16Codes = Array.from({ length: 0x7c00 }, (_, i) => i);
const f16Cand = candidates(f16Codes, f16Ref);
f16Cand.v.push(65536);
f16Cand.c.push(0x7c00);
function f16RefEncode(x: number): number {
  const sign = x < 0 || Object.is(x, -0) ? 0x8000 : 0;
  const a = Math.abs(x);
  return a >= 65536 ? sign | 0x7c00 : sign | nearest(a, f16Cand);
}
const f8Cand = candidates(
  Array.from({ length: 0x7f }, (_, i) => i),
  f8Ref,
); // codes 0..0x7e (0x7f is NaN)
function f8RefEncode(x: number): number {
  const sign = x < 0 || Object.is(x, -0) ? 0x80 : 0;
  return sign | nearest(Math.abs(x), f8Cand); // beyond 448 → 448 (saturation)
}
const bf16Cand = candidates(
  Array.from({ length: 0x7f80 }, (_, i) => i),
  bf16Ref,
);
bf16Cand.v.push(2 ** 128);
bf16Cand.c.push(0x7f80);
function bf16RefEncode(x: number): number {
  const sign = x < 0 || Object.is(x, -0) ? 0x8000 : 0;
  const a = Math.abs(x);
  return a >= 2 ** 128 ? sign | 0x7f80 : sign | nearest(a, bf16Cand);
}

/** Test inputs around a sorted value grid: each value, midpoints, and midpoints nudged one f32 ulp either way. */
function probes(values: number[], r: () => number, nRandom: number, maxAbs: number): Float32Array {
  const out: number[] = [];
  const nudge = (x: number, d: number) => {
    const f = new Float32Array([x]);
    const u = new Uint32Array(f.buffer);
    if (x === 0) return d > 0 ? 1.4e-45 : 0;
    u[0] += d;
    return f[0];
  };
  for (let i = 0; i < values.length; i++) {
    out.push(values[i]);
    if (i + 1 < values.length) {
      const mid = Math.fround((values[i] + values[i + 1]) / 2);
      out.push(mid, nudge(mid, 1), nudge(mid, -1));
    }
  }
  for (let i = 0; i < nRandom; i++) out.push(Math.fround((r() * 2 - 1) * maxAbs * r() ** 8));
  const pos = Float32Array.from(out);
  const all = new Float32Array(pos.length * 2);
  all.set(pos);
  for (let i = 0; i < pos.length; i++) all[pos.length + i] = -pos[i];
  return all;
}

test('dtype table', () => {
  assert.equal(DTYPE_BYTES.F32, 4);
  assert.equal(DTYPE_BYTES.BF16, 2);
  assert.equal(DTYPE_BYTES.F8_E4M3, 1);
  assert.equal(DTYPE_BYTES.I64, 8);
  assert.equal(DTYPE_BYTES.BOOL, 1);
  assert.ok(isDtype('F16'));
  assert.ok(!isDtype('F4'));
  assert.ok(!isDtype('toString'));
});

test('f16: all 65536 codes decode like the reference and round-trip bit-exactly (NaN payloads too)', () => {
  const codes = new Uint16Array(65536).map((_, i) => i);
  const f32 = f16ToF32Array(codes);
  for (let h = 0; h < 65536; h++) {
    const ref = f16Ref(h);
    if (Number.isNaN(ref)) assert.ok(Number.isNaN(f32[h]) && Number.isNaN(f16BitsToF32(h)), `code ${h}`);
    else {
      assert.ok(Object.is(f32[h], ref), `code ${h}: ${f32[h]} vs ${ref}`);
      assert.ok(Object.is(f16BitsToF32(h), ref));
    }
  }
  const back = f32ArrayToF16(f32);
  for (let h = 0; h < 65536; h++) assert.equal(back[h], h, `code ${h}`);
  for (let h = 0; h < 65536; h++) if (!Number.isNaN(f16Ref(h))) assert.equal(f32ToF16Bits(f16BitsToF32(h)), h);
});

test('f16: encoding equals the float64 nearest-value reference (RNE, subnormals, overflow, NaN)', () => {
  const x = probes([...f16Cand.v.slice(0, -1), 65520, 65536, 1e6, 2 ** -25, 2 ** -26, 3 * 2 ** -26], rng(1), 100000, 70000);
  const enc = f32ArrayToF16(x);
  let checked = 0;
  for (let i = 0; i < x.length; i++) {
    const want = f16RefEncode(x[i]);
    assert.equal(enc[i], want, `x=${x[i]}: got 0x${enc[i].toString(16)} want 0x${want.toString(16)}`);
    assert.equal(f32ToF16Bits(x[i]), want);
    checked++;
  }
  assert.ok(checked > 300000);
  assert.equal(f32ToF16Bits(Infinity), 0x7c00);
  assert.equal(f32ToF16Bits(-Infinity), 0xfc00);
  assert.equal(f32ToF16Bits(NaN) & 0x7c00, 0x7c00);
  assert.notEqual(f32ToF16Bits(NaN) & 0x3ff, 0);
  assert.equal(f32ToF16Bits(-0), 0x8000);
  assert.equal(f32ToF16Bits(65519.99), 0x7bff);
  assert.equal(f32ToF16Bits(65520), 0x7c00);
});

test('bf16: all 65536 codes round-trip and encoding equals the reference', () => {
  const codes = new Uint16Array(65536).map((_, i) => i);
  const f32 = bf16ToF32Array(codes);
  for (let h = 0; h < 65536; h++) {
    const ref = bf16Ref(h);
    if (Number.isNaN(ref)) assert.ok(Number.isNaN(f32[h]));
    else assert.ok(Object.is(f32[h], ref) && Object.is(bf16BitsToF32(h), ref), `code ${h}`);
  }
  const back = f32ArrayToBf16(f32);
  for (let h = 0; h < 65536; h++) {
    if (Number.isNaN(bf16Ref(h))) assert.equal(back[h] & 0x7fc0, 0x7fc0, `NaN code ${h} stays a (quiet) NaN`);
    else assert.equal(back[h], h, `code ${h}`);
  }
  // probe a sampled grid (every 7th positive value keeps the test fast) plus random values
  const grid = bf16Cand.v.filter((_, i) => i % 7 === 0 || i > bf16Cand.v.length - 4);
  const x = probes(grid, rng(2), 50000, 3e38);
  const enc = f32ArrayToBf16(x);
  for (let i = 0; i < x.length; i++) {
    const want = bf16RefEncode(x[i]);
    assert.equal(enc[i], want, `x=${x[i]}`);
    assert.equal(f32ToBf16Bits(x[i]), want);
  }
});

test('fp8 e4m3fn: all 256 codes decode like the reference and round-trip', () => {
  const codes = new Uint8Array(256).map((_, i) => i);
  const f32 = f8E4M3ToF32Array(codes);
  for (let c = 0; c < 256; c++) {
    const ref = f8Ref(c);
    if (Number.isNaN(ref)) {
      assert.ok(Number.isNaN(f32[c]));
      assert.ok(c === 0x7f || c === 0xff);
    } else assert.ok(Object.is(f32[c], ref) && Object.is(f8E4M3ToF32(c), ref), `code ${c}`);
  }
  const back = f32ArrayToF8E4M3(f32);
  for (let c = 0; c < 256; c++) assert.equal(back[c], c, `code ${c}`);
  assert.equal(f8E4M3ToF32(0x7e), 448);
  assert.equal(f8E4M3ToF32(1), 2 ** -9);
});

test('fp8 e4m3fn: encoding equals the brute-force nearest value (RNE, subnormals, saturation)', () => {
  const x = probes([...f8Cand.v, 464, 480, 1e5, 3e38, 2 ** -10, 3 * 2 ** -11], rng(3), 20000, 600);
  const enc = f32ArrayToF8E4M3(x);
  for (let i = 0; i < x.length; i++) {
    // literal brute force over all 127 non-negative finite codes
    const a = Math.abs(x[i]);
    let best = 0,
      bestD = Infinity;
    for (let c = 0; c <= 0x7e; c++) {
      const d = Math.abs(f8Ref(c) - a);
      if (d < bestD || (d === bestD && (c & 1) === 0)) {
        best = c;
        bestD = d;
      }
    }
    const want = (x[i] < 0 || Object.is(x[i], -0) ? 0x80 : 0) | best;
    assert.equal(enc[i], want, `x=${x[i]}`);
    assert.equal(f32ToF8E4M3(x[i]), want);
    assert.equal(f8RefEncode(x[i]), want);
  }
  assert.equal(f32ToF8E4M3(Infinity), 0x7e);
  assert.equal(f32ToF8E4M3(-Infinity), 0xfe);
  assert.equal(f32ToF8E4M3(NaN) & 0x7f, 0x7f);
  assert.equal(f32ToF8E4M3(464), 0x7e); // midpoint to the (non-existent) 480: saturates
});
