// The min-max uniform quantizer of the original GPTQ code (IST-DASLab/gptq `quant.py`:
// `Quantizer.find_params` with perchannel=True, mse=False, and `quantize`), reproduced bit for bit.
//
// The reference runs in float32. JS numbers are float64, but one +, −, ×, ÷ of two float32 values
// done in float64 and rounded with Math.fround is the correctly rounded float32 result, so every
// step below is `fround(a op b)` and the result equals torch's float32 result exactly
// (../../../../shared/golden/README.md §5 and hints). `round` is torch.round: half to even.
// Inputs may be float64 (GPTQ's working copy): they are first rounded to float32, as the
// reference's float32 `W` would hold them.

import { BITS } from '../../protocol/config';

const fround = Math.fround;

/** torch.round: round half to even (JS Math.round rounds half up: −7.5 → −7, torch gives −8). */
export function roundHalfEven(x: number): number {
  const r = Math.round(x);
  return r - x === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** 2^bits − 1, after checking that the width is one of the config's (protocol/config.ts BITS). */
export function maxqFor(bits: number): number {
  if (!(BITS as readonly number[]).includes(bits)) throw new RangeError(`bits must be ${BITS.join(', ')}, got ${bits}`);
  return (1 << bits) - 1;
}

/**
 * find_params' range of one row segment: xmin = min(min x, 0), xmax = max(max x, 0) over the
 * float32 values (min/max of float32 values are exact), symmetrised when `sym`, and [-1, 1] for an
 * all-zero segment (the reference's rule). `copyTo` receives the float32 values when given.
 */
function rangeOf(vals: ArrayLike<number>, off: number, len: number, sym: boolean, copyTo?: Float64Array): [number, number] {
  let xmin = 0,
    xmax = 0;
  for (let j = 0; j < len; j++) {
    const v = fround(vals[off + j]);
    if (copyTo) copyTo[j] = v;
    if (v < xmin) xmin = v;
    if (v > xmax) xmax = v;
  }
  if (sym) {
    xmax = Math.max(-xmin, xmax);
    if (xmin < 0) xmin = -xmax;
  }
  if (xmin === 0 && xmax === 0) return [-1, 1];
  return [xmin, xmax];
}

/**
 * `Quantizer.find_params` for one row segment x = vals[off], vals[off+1], …, vals[off+len−1]
 * (one row of one group). Returns [scale, zero], both float32 values (zero is an integer).
 */
export function findParamsRow(vals: ArrayLike<number>, off: number, len: number, maxq: number, sym: boolean): [number, number] {
  const [xmin, xmax] = rangeOf(vals, off, len, sym);
  const scale = fround(fround(xmax - xmin) / maxq);
  const zero = sym ? (maxq + 1) / 2 : roundHalfEven(fround(-xmin / scale));
  return [scale, zero];
}

/**
 * `find_params` with the reference's `mse=True` search (quant.py: grid 100, maxshrink 0.8, norm 2.4):
 * the min-max range is shrunk by p = 1 − i/grid, i = 0 … maxshrink·grid − 1, and the (scale, zero)
 * with the smallest Σ|Q(x) − x|^2.4 over the row segment is kept (strictly smaller wins, so ties keep
 * the wider range). At 2–3 bits clipping the extremes lowers the error of everything else.
 */
export function findParamsRowMse(vals: ArrayLike<number>, off: number, len: number, maxq: number, sym: boolean, grid = 100, maxShrink = 0.8, norm = 2.4): [number, number] {
  // The segment as float32 values, once (the candidate loop below runs 80× over it).
  const x = len <= mseScratch.length ? mseScratch : (mseScratch = new Float64Array(len));
  const [xmin, xmax] = rangeOf(vals, off, len, sym, x);
  let best = Infinity;
  let [scale, zero] = findParamsRow(vals, off, len, maxq, sym);
  for (let i = 0; i < Math.trunc(maxShrink * grid); i++) {
    const p = fround(1 - i / grid);
    const lo = fround(p * xmin),
      hi = fround(p * xmax);
    const s1 = fround(fround(hi - lo) / maxq);
    const z1 = sym ? (maxq + 1) / 2 : roundHalfEven(fround(-lo / s1));
    // quantizeCode + dequantizeCode inlined (same float32 steps), |ŵ − x|^norm summed. Unclipped
    // values have |ŵ − x| ≤ s1/2: their term is s1^norm·(d/s1)^norm, read from a table (pow is 85 %
    // of the time otherwise); clipped values (d > s1/2) use pow. Stop once the candidate cannot win.
    const pw = powTable(norm),
      sN = s1 ** norm,
      inv = 1 / s1;
    let inRange = 0,
      clipped = 0;
    for (let j = 0; j < len && sN * inRange + clipped < best; j++) {
      const v = x[j];
      const t = fround(v / s1);
      let r = Math.round(t);
      if (r - t === 0.5 && r % 2 !== 0) r -= 1;
      let q = r + z1;
      q = q < 0 ? 0 : Math.min(q, maxq);
      const d = Math.abs(fround(s1 * (q - z1)) - v);
      const u = d * inv * POW_STEPS_PER_HALF * 2;
      if (u < POW_STEPS_PER_HALF) {
        const k = u | 0,
          f = u - k;
        inRange += pw[k] + f * (pw[k + 1] - pw[k]);
      } else if (d !== 0) clipped += d ** norm;
    }
    const err = sN * inRange + clipped;
    if (err < best) {
      best = err;
      scale = s1;
      zero = z1;
    }
  }
  return [scale, zero];
}

let mseScratch = new Float64Array(256);

/**
 * t^norm on [0, 0.5] at POW_STEPS_PER_HALF + 1 points, read with linear interpolation: for norm 2.4
 * the error is ≤ h²/8·max f'' ≈ 2e-8 absolute per term, below the float32 rounding of the
 * reference's own pow and sum.
 */
const POW_STEPS_PER_HALF = 2048;
const powTables = new Map<number, Float64Array>();
function powTable(norm: number): Float64Array {
  let t = powTables.get(norm);
  if (!t) {
    t = new Float64Array(POW_STEPS_PER_HALF + 2);
    for (let k = 0; k < t.length; k++) t[k] = (k / (2 * POW_STEPS_PER_HALF)) ** norm;
    powTables.set(norm, t);
  }
  return t;
}

/**
 * find_params for every row of the column range [c0, c1) of a row-major rows×cols matrix.
 * Writes scale/zero into `scaleOut`/`zeroOut` at index r·stride + slot (the group column).
 * The range is truncated at `cols` (the reference slices W[:, i:i+g], which stops at C).
 */
export function findParams(
  wVals: ArrayLike<number>,
  rows: number,
  cols: number,
  c0: number,
  c1: number,
  maxq: number,
  sym: boolean,
  scaleOut: Float32Array | Float64Array,
  zeroOut: Float32Array | Float64Array,
  stride: number,
  slot: number,
  clip: 'minmax' | 'mse' = 'minmax',
): void {
  const end = Math.min(c1, cols);
  const fit = clip === 'mse' ? findParamsRowMse : findParamsRow;
  for (let r = 0; r < rows; r++) {
    const [s, z] = fit(wVals, r * cols + c0, end - c0, maxq, sym);
    scaleOut[r * stride + slot] = s;
    zeroOut[r * stride + slot] = z;
  }
}

/** The integer code clamp(round(x / scale) + zero, 0, maxq) of one value (float32 semantics). */
export function quantizeCode(x: number, scale: number, zero: number, maxq: number): number {
  const q = roundHalfEven(fround(fround(x) / scale)) + zero;
  return q < 0 ? 0 : Math.min(q, maxq);
}

/** The dequantized value scale·(code − zero), one float32 multiply as in the reference. */
export function dequantizeCode(code: number, scale: number, zero: number): number {
  return fround(scale * (code - zero));
}
