// Per-group min–max fake quantisation on ONNX Runtime, with the semantics of GPTQ's quant.py
// (Quantizer.find_params with perchannel=True, then quantize()):
//   xmin = min(0, min x), xmax = max(0, max x)                 per row and group of `groupSize` columns
//   sym:  xmax = max(|xmin|, xmax); xmin = −xmax where xmin < 0
//   xmin = −1, xmax = +1 where both are 0
//   scale = (xmax − xmin) / maxq;  zero = sym ? (maxq+1)/2 : round(−xmin / scale)
//   q = clamp(round(x / scale) + zero, 0, maxq);  deq = scale · (q − zero)
// A short last group (cols not divisible by groupSize) is zero-padded: the min/max are clamped through 0,
// so padding changes nothing.
//
// Rounding: torch.round and ONNX Round are both round-half-to-even ('even', the default, needed for exact
// agreement with GPTQ). The WebGPU EP runs Round on the CPU (shared/guides/gpu-device.md: +110–150 ms of
// round trips per use), so on WebGPU 'even' is composed from GPU ops instead:
//   r = Floor(x + 0.5); tie = 1 − Ceil(|x + 0.5 − r|); odd = r − 2·Floor(r/2); round = r − tie·odd.
// 'up' is plain Floor(x + 0.5) (half away from −∞), cheaper, differs from 'even' only on exact ties.
// Measured on the H100 (bench/compute_check.ts): on WebGPU the results equal the f32 reference except at
// exact ties of x/scale, because WGSL f32 division is not correctly rounded (2.5 ulp allowed): in sym mode
// the most negative weight of a group sits at −(maxq+1)/2 exactly and may get code 1 instead of 0
// (112 of 38,700 codes for w3 g128). CPU and CUDA division is IEEE, so there the codes are bit-exact.

import { GraphBuilder, type Value } from './graph';
import { getRuntime, type ComputeRuntime, type Tensor } from './runtime';

export interface FakeQuantParams {
  bits: number;
  /** Columns per group; −1 = one group per row. */
  groupSize: number;
  sym: boolean;
  rounding?: 'even' | 'up';
}

export interface FakeQuantResult {
  /** Dequantised weights, rows×cols. */
  deq: Float32Array;
  /** Integer codes 0..maxq stored as floats, rows×cols. */
  codes: Float32Array;
  /** rows×groups. */
  scale: Float32Array;
  zero: Float32Array;
}

export function groupsOf(cols: number, groupSize: number): { g: number; groups: number } {
  const g = groupSize === -1 || groupSize >= cols ? cols : groupSize;
  if (!(Number.isInteger(g) && g >= 1)) throw new RangeError(`group size ${groupSize} is not a positive integer or −1`);
  return { g, groups: Math.ceil(cols / g) };
}

/** Runs on `rt` (host in, host out). `roundImpl` forces the Round op or the composed form (tests). */
export async function fakeQuant(w: Float32Array, rows: number, cols: number, p: FakeQuantParams, opts: { rt?: ComputeRuntime; roundImpl?: 'op' | 'composed' } = {}): Promise<FakeQuantResult> {
  if (w.length !== rows * cols) throw new RangeError(`W: ${w.length} elements, expected ${rows}×${cols}`);
  const rt = opts.rt ?? (await getRuntime());
  const out = await fakeQuantTensor(rt, rt.host(w, [rows, cols]), cols, p, 'host', opts.roundImpl);
  const res = { deq: await rt.download(out.deq), codes: await rt.download(out.codes), scale: await rt.download(out.scale), zero: await rt.download(out.zero) };
  rt.release(out.deq, out.codes, out.scale, out.zero);
  return res;
}

/** Device-friendly form: W as a tensor (possibly gpu-buffer), outputs left where `placement` says. */
export async function fakeQuantTensor(rt: ComputeRuntime, w: Tensor, cols: number, p: FakeQuantParams, placement: 'host' | 'device' = 'device', roundImpl?: 'op' | 'composed'): Promise<Record<'deq' | 'codes' | 'scale' | 'zero', Tensor>> {
  const impl = roundImpl ?? (rt.ep === 'webgpu' ? 'composed' : 'op');
  const rounding = p.rounding ?? 'even';
  const key = `fakequant/${cols}/${p.bits}/${p.groupSize}/${p.sym}/${rounding}/${impl}`;
  const s = await rt.session(key, () => fakeQuantModel(cols, p, rounding, impl), placement);
  const r = await rt.run(s, { w });
  return { deq: r.deq, codes: r.codes, scale: r.scale, zero: r.zero };
}

function fakeQuantModel(cols: number, p: FakeQuantParams, rounding: 'even' | 'up', impl: 'op' | 'composed'): Uint8Array {
  const maxq = 2 ** p.bits - 1;
  const { g: gs, groups } = groupsOf(cols, p.groupSize);
  const padded = gs * groups;
  const g = new GraphBuilder('fakequant');
  const c = (v: number) => g.constF32(v);
  const round = (x: Value) => roundNode(g, x, rounding, impl);
  const w = g.input('w', 'float32', ['rows', cols]);
  const wp = padded === cols ? w : g.op('Pad', [w, g.constI64([0, 0, 0, padded - cols]), c(0)]);
  const x = g.op('Reshape', [wp, g.constI64([-1, groups, gs])]);
  let xmin = g.op('Min', [g.op('ReduceMin', [x], { axes: [2], keepdims: 1 }), c(0)]);
  let xmax = g.op('Max', [g.op('ReduceMax', [x], { axes: [2], keepdims: 1 }), c(0)]);
  if (p.sym) {
    xmax = g.op('Max', [g.op('Abs', [xmin]), xmax]);
    xmin = g.op('Where', [g.op('Greater', [c(0), xmin]), g.op('Neg', [xmax]), xmin]);
  }
  const nonEmpty = g.op('Greater', [g.op('Sub', [xmax, xmin]), c(0)]);
  xmin = g.op('Where', [nonEmpty, xmin, c(-1)]);
  xmax = g.op('Where', [nonEmpty, xmax, c(1)]);
  const scale = g.op('Div', [g.op('Sub', [xmax, xmin]), c(maxq)]);
  const zero = p.sym ? g.op('Expand', [c((maxq + 1) / 2), g.op('Shape', [scale])]) : round(g.op('Div', [g.op('Neg', [xmin]), scale]));
  const q = g.op('Clip', [g.op('Add', [round(g.op('Div', [x, scale])), zero]), c(0), c(maxq)]);
  const deq = g.op('Mul', [scale, g.op('Sub', [q, zero])]);
  const flat = (v: Value) => {
    const f = g.op('Reshape', [v, g.constI64([-1, padded])]);
    return padded === cols ? f : g.op('Slice', [f, g.constI64([0]), g.constI64([cols]), g.constI64([1])]);
  };
  g.output(flat(deq), 'deq');
  g.output(flat(q), 'codes');
  g.output(g.op('Reshape', [scale, g.constI64([-1, groups])]), 'scale');
  g.output(g.op('Reshape', [zero, g.constI64([-1, groups])]), 'zero');
  return g.toModel();
}

/** Rounding nodes: the Round op, or its GPU-resident composition (see the header), or Floor(x + 0.5). */
export function roundNode(g: GraphBuilder, x: Value, rounding: 'even' | 'up', impl: 'op' | 'composed'): Value {
  if (rounding === 'even' && impl === 'op') return g.op('Round', [x]);
  const xh = g.op('Add', [x, g.constF32(0.5)]);
  const r = g.op('Floor', [xh]);
  if (rounding === 'up') return r;
  const tie = g.op('Sub', [g.constF32(1), g.op('Ceil', [g.op('Abs', [g.op('Sub', [xh, r])])])]);
  const odd = g.op('Sub', [r, g.op('Mul', [g.constF32(2), g.op('Floor', [g.op('Mul', [r, g.constF32(0.5)])])])]);
  return g.op('Sub', [r, g.op('Mul', [tie, odd])]);
}

/** Round half to even (torch.round / ONNX Round). */
export function roundHalfEven(x: number): number {
  const r = Math.round(x); // half up
  return r - x === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/**
 * Naive twin. `f32: true` rounds every intermediate to float32 like torch/ORT do (then results agree
 * bit for bit); false computes in float64.
 */
export function fakeQuant_ref(w: ArrayLike<number>, rows: number, cols: number, p: FakeQuantParams, f32 = true): FakeQuantResult {
  const F = f32 ? Math.fround : (v: number) => v;
  const rnd = (p.rounding ?? 'even') === 'even' ? roundHalfEven : (v: number) => Math.floor(v + 0.5);
  const maxq = 2 ** p.bits - 1;
  const { g, groups } = groupsOf(cols, p.groupSize);
  const deq = new Float32Array(rows * cols);
  const codes = new Float32Array(rows * cols);
  const scale = new Float32Array(rows * groups);
  const zero = new Float32Array(rows * groups);
  for (let r = 0; r < rows; r++)
    for (let k = 0; k < groups; k++) {
      const c0 = k * g;
      const c1 = Math.min(cols, c0 + g);
      let xmin = 0;
      let xmax = 0;
      for (let c = c0; c < c1; c++) {
        xmin = Math.min(xmin, w[r * cols + c]);
        xmax = Math.max(xmax, w[r * cols + c]);
      }
      if (p.sym) {
        xmax = Math.max(Math.abs(xmin), xmax);
        if (xmin < 0) xmin = -xmax;
      }
      if (xmin === 0 && xmax === 0) {
        xmin = -1;
        xmax = 1;
      }
      const s = F(F(xmax - xmin) / maxq);
      const z = p.sym ? (maxq + 1) / 2 : rnd(F(-xmin / s));
      scale[r * groups + k] = s;
      zero[r * groups + k] = z;
      for (let c = c0; c < c1; c++) {
        const q = Math.min(maxq, Math.max(0, rnd(F(w[r * cols + c] / s)) + z));
        codes[r * cols + c] = q;
        deq[r * cols + c] = F(s * (q - z));
      }
    }
  return { deq, codes, scale, zero };
}
