// GPTQ with the column loop itself on the device (issue 5): one ORT run per lazy batch of B columns.
// The batch's graph is the reference's inner loop unrolled (fasterquant, per column i of the batch):
//   q_i = quantize(w_i);  Err1[:, i] = (w_i − q_i)/d_i;  W1[:, i:] −= Err1[:, i]·Hinv[i, i:]
// followed by the lazy update of the rest, W[:, i2:] −= Err1·Hinv[i1:i2, i2:], so W stays on the
// device for the whole layer (uploaded once, float32, in row chunks ≤ 64 MiB), Hinv too where the
// Cholesky left it there (U, sliced per batch in the graph), and each batch's codes, group params
// and loss (one packed [rows, B + 2·groups + 1] tensor) are read back once the whole loop is enqueued.
// Why: the hybrid driver (workers for the column loops + device lazy updates) waited ~0.9 s per
// 4096² layer on per-batch worker↔device synchronisation; on WebGPU a graph node costs ~10–15 µs
// (bench/ep_profile.ts, bench/loop_probe.ts), so the node count per column is what the loop costs
// (LoopForm: 7 in the default 'shifted' graph).
//
// Semantics = gptqCore (same preparation: gptqPrepare; same order, dead columns, damping, Cholesky
// fallback; dynamic group params from W at the batch start: the reference's quirk). Differences, all
// at float32 rounding level: the loop runs in float32 (the TypeScript core in float64), and the codes
// round half down, ⌈x/s − ½⌉ with x·(1/s) (the WebGPU EP runs the Round op on the CPU; two GPU ops
// instead of nine for a composed half-even) — they differ from round-half-even only at exact ties, and
// the ties that are systematic agree: in sym mode x/s = −(maxq+1)/2 (a group's most negative weight)
// gives code 0 both ways, +(maxq+1)/2 gives maxq after the clamp both ways. Supported: clip 'minmax', groupSize −1 or a
// divisor of the batch width, no static groups (deviceLoopSupports); other configs use the hybrid driver.

import { GraphBuilder, type Value } from '../compute/graph';
import type { ComputeRuntime, Tensor } from '../compute/runtime';
import { roundNode } from '../compute/fakequant';
import type { GptqOptions, GptqResult } from './gptq';
import { choleskyFallbackHinv, gptqPrepare } from './gptq_core';
import { invertPermutation } from './gptq_kernels';
import { dequantizeCode } from './quantizer';
import { chunkRows } from './r1svd_device';

const now = () => performance.now() / 1000;

/** True when the device loop implements `opts` for a layer of `cols` columns. */
export function deviceLoopSupports(opts: GptqOptions, cols: number): boolean {
  if ((opts.clip ?? 'minmax') !== 'minmax') return false;
  const G = opts.groupSize ?? -1, B = Math.max(1, Math.min(opts.blockSize ?? 128, cols));
  if (G === -1) return true;
  return !opts.staticGroups && Number.isInteger(G) && G > 0 && B % G === 0;
}

/**
 * How a batch's graph is written. 'direct': fasterquant's per-column step as is (11 nodes per column).
 * 'shifted' (issue 5, session 4): the batch works on T = W1·(1/s) + (z − ½) − c, the weights in code
 * units, so a column is Slice, Ceil, Clip, Sub and its update Slice, Mul, Sub (7 nodes). It needs one
 * set of params for the whole batch (per-row params, or one group per batch: the default g128/B128),
 * and is exact algebra, not an approximation: with hs = Hinv's rows scaled by 1/d, fasterquant's
 * t_j −= (t_i + ½ − q_i)·hs_ij becomes T_j −= (T_i − q_i)·hs_ij once every column starts shifted by
 * c_j = ½·Σ_{i<j} hs_ij (by induction T_j = t_j when column j is reached).
 */
export type LoopForm = 'direct' | 'shifted';

export interface BatchShape {
  form: LoopForm;
  /**
   * Where Hinv's rows come from: 'host' feeds h [count, C] and invd [1, count]; 'device' slices them
   * from U [N, N] resident on the device (rows hb[0]..he[0], columns hb[1]..he[1], int64 inputs) and
   * takes 1/d from its diagonal.
   */
  hFrom: 'host' | 'device';
  count: number;
  /** Group width inside the batch (−1: per-row params fed in). */
  G: number;
  sym: boolean;
  maxq: number;
  /**
   * W's rows as the device holds them: row chunks of these sizes (inputs w0.., outputs wn0..), each at
   * most 64 MiB. Why: on the WebGPU EP a tensor over 128 MiB takes a slow path — the lazy update of a
   * 11008×4096 layer's first batch took 16.8 ms whole and 1.5 ms in two row chunks (bench/loop_probe.ts).
   */
  rowChunks: number[];
  /** Columns after the batch exist (the lazy update and `wn*` outputs). */
  tail: boolean;
}

/** Packed output columns: codes (count) | scales (groups) | zeros (groups, asym) | Σ_i Err1² per row (1). */
function packedWidth(s: BatchShape): number {
  const ng = s.G === -1 ? 0 : Math.ceil(s.count / s.G);
  return s.count + ng * (s.sym ? 1 : 2) + 1;
}

/**
 * One batch: inputs w0.. (W's columns i1.. in row chunks [R_k, C], on the device), h [count, C]
 * (Hinv[i1:i2, i1:]) and invd [1, count] (1/Hinv[k, k]) or U (see hFrom) and, for G = −1, s/z [R, 1];
 * outputs packed [R, packedWidth] and, with a tail, wn0.. [R_k, C − count] = W[:, i2:] after the lazy update.
 */
export function batchModel(sh: BatchShape): () => Uint8Array {
  return () => {
    const g = new GraphBuilder('gptq_batch');
    const { count, G, sym, maxq } = sh;
    const ws = sh.rowChunks.map((r, k) => g.input(`w${k}`, 'float32', [r, 'C']));
    const c = (v: number) => g.constF32(v);
    const cols = (x: Value, a: number, b: number) => g.op('Slice', [x, g.constI64([a]), g.constI64([b]), g.constI64([1])]);
    const rowsOf = (x: Value, a: number, b: number) => g.op('Slice', [x, g.constI64([a]), g.constI64([b]), g.constI64([0])]);
    let h: Value, invd: Value, invdCol: Value;
    if (sh.hFrom === 'device') {
      const u = g.input('u', 'float32', ['N', 'N']);
      h = g.op('Slice', [u, g.input('hb', 'int64', [2]), g.input('he', 'int64', [2]), g.constI64([0, 1])]);
      const eye = new Float32Array(count * count);
      for (let i = 0; i < count; i++) eye[i * count + i] = 1;
      const diag = g.op('ReduceSum', [g.op('Mul', [cols(h, 0, count), g.initializer('eye', eye, [count, count])]), g.constI64([1])], { keepdims: 1 });
      invdCol = g.op('Div', [c(1), diag]);
      invd = g.op('Reshape', [invdCol, g.constI64([1, count])]);
    } else {
      h = g.input('h', 'float32', [count, 'C']);
      invd = g.input('invd', 'float32', [1, count]);
      invdCol = g.op('Reshape', [invd, g.constI64([count, 1])]);
    }
    let W1 = ws.length === 1 ? cols(ws[0], 0, count) : g.op('Concat', ws.map((wk) => cols(wk, 0, count)), { axis: 0 });
    // Hinv's batch block with row i scaled by 1/d_i (the intra-batch update is (w_i − q_i)·Hinv[i, :]/d_i).
    // Its rows by Slice: a Split into `count` outputs exceeds the WebGPU EP's shader bindings (fails at 128).
    const hs = g.op('Mul', [cols(h, 0, count), invdCol]);
    const hRows = Array.from({ length: count }, (_, i) => g.op('Slice', [hs, g.constI64([i]), g.constI64([i + 1]), g.constI64([0])]));
    // Group params from W at the batch start (find_params, min-max), and the per-group constants of
    // the column step: 1/s and z − ½ (code = clamp(⌈w·(1/s) + z − ½⌉, 0, maxq): round half down, see
    // the header), s·z (w − ŵ = w + s·z − s·code).
    const scales: Value[] = [], zeros: Value[] = [];
    if (G === -1) {
      scales.push(g.input('s', 'float32', ['R', 1]));
      zeros.push(g.input('z', 'float32', ['R', 1]));
    } else {
      for (let a = 0; a < count; a += G) {
        const seg = cols(W1, a, Math.min(count, a + G));
        let mn = g.op('Min', [g.op('ReduceMin', [seg], { axes: [1], keepdims: 1 }), c(0)]);
        let mx = g.op('Max', [g.op('ReduceMax', [seg], { axes: [1], keepdims: 1 }), c(0)]);
        if (sym) {
          mx = g.op('Max', [g.op('Neg', [mn]), mx]);
          mn = g.op('Where', [g.op('Less', [mn, c(0)]), g.op('Neg', [mx]), mn]);
        }
        const both0 = g.op('And', [g.op('Equal', [mn, c(0)]), g.op('Equal', [mx, c(0)])]);
        mn = g.op('Where', [both0, c(-1), mn]);
        mx = g.op('Where', [both0, c(1), mx]);
        const s = g.op('Div', [g.op('Sub', [mx, mn]), c(maxq)]);
        scales.push(s);
        zeros.push(sym ? c((maxq + 1) / 2) : roundNode(g, g.op('Div', [g.op('Neg', [mn]), s]), 'even', 'composed'));
      }
    }
    const inv = scales.map((s) => g.op('Div', [c(1), s]));
    const zHalf = zeros.map((z) => g.op('Sub', [z, c(0.5)]));
    const codes: Value[] = [], diffs: Value[] = [];
    const cat = (vs: Value[]) => (vs.length === 1 ? vs[0] : g.op('Concat', vs, { axis: 1 }));
    let err: Value; // Err1 [R, count]
    if (sh.form === 'shifted') {
      // c_j = ½·Σ_{i<j} hs_ij (hs is upper triangular: the strictly upper part by a constant mask).
      const mask = new Float32Array(count * count);
      for (let i = 0; i < count; i++) for (let j = i + 1; j < count; j++) mask[i * count + j] = 0.5;
      const shift = g.op('ReduceSum', [g.op('Mul', [hs, g.initializer('upper_half', mask, [count, count])]), g.constI64([0])], { keepdims: 1 });
      let T = g.op('Add', [g.op('Mul', [W1, inv[0]]), g.op('Sub', [zHalf[0], shift])]);
      const rs: Value[] = [];
      for (let i = 0; i < count; i++) {
        const ti = cols(T, i, i + 1);
        const q = g.op('Clip', [g.op('Ceil', [ti]), c(0), c(maxq)]);
        const r = g.op('Sub', [ti, q]); // t_i − q_i: the column's error in code units, less ½
        codes.push(q);
        rs.push(r);
        if (i + 1 < count) T = g.op('Sub', [T, g.op('Mul', [r, hRows[i]])]);
      }
      err = g.op('Mul', [g.op('Mul', [g.op('Add', [cat(rs), c(0.5)]), scales[0]]), invd]); // s·(r + ½)/d
    } else {
      const sz = scales.map((s, k) => g.op('Mul', [s, zeros[k]]));
      for (let i = 0; i < count; i++) {
        const gi = G === -1 ? 0 : Math.floor(i / G);
        const wi = cols(W1, i, i + 1);
        const q = g.op('Clip', [g.op('Ceil', [g.op('Add', [g.op('Mul', [wi, inv[gi]]), zHalf[gi]])]), c(0), c(maxq)]);
        const diff = g.op('Sub', [g.op('Add', [wi, sz[gi]]), g.op('Mul', [scales[gi], q])]); // w − s·(q − z)
        codes.push(q);
        diffs.push(diff);
        if (i + 1 < count) W1 = g.op('Sub', [W1, g.op('Mul', [diff, hRows[i]])]);
      }
      err = g.op('Mul', [cat(diffs), invd]);
    }
    const rowLoss = g.op('ReduceSum', [g.op('Mul', [err, err]), g.constI64([1])], { keepdims: 1 });
    const packed: Value[] = [...codes];
    if (G !== -1) {
      packed.push(...scales);
      if (!sym) packed.push(...zeros);
    }
    packed.push(rowLoss);
    g.output(cat(packed), 'packed');
    if (sh.tail) {
      const big = 2 ** 62;
      const hTail = cols(h, count, big);
      let r0 = 0;
      sh.rowChunks.forEach((r, k) => {
        const e = ws.length === 1 ? err : rowsOf(err, r0, r0 + r);
        g.output(g.op('Sub', [cols(ws[k], count, big), g.op('MatMul', [e, hTail])]), `wn${k}`);
        r0 += r;
      });
    }
    return g.toModel();
  };
}

export interface DeviceLoopHooks {
  /** Hinv (upper U with UᵀU = H_d⁻¹); throws NotPositiveDefiniteError → the RTN fallback. */
  choleskyInverseUpperAsync: (H: Float64Array, n: number) => Promise<Float64Array>;
  /** The same U left on `rt`'s device (linalg/cholesky.ts choleskyInverseUpperTensor); preferred when given. */
  choleskyInverseUpperTensor?: (H: Float64Array, n: number) => Promise<Tensor>;
  /** 'auto' (default): 'shifted' where a batch has one set of params, else 'direct'. */
  loopForm?: 'auto' | LoopForm;
  /** Most bytes per row chunk of W on the device (default r1svd_device's 64 MiB; tests pass small ones). */
  chunkBytes?: number;
}

/** The batch graph's form: 'shifted' needs one set of params per batch (see LoopForm). */
function loopForm(asked: DeviceLoopHooks['loopForm'], G: number, count: number): LoopForm {
  const oneParamSet = G === -1 || count <= G;
  const want = asked ?? (process.env.LOPRO_GPTQ_LOOP_FORM as LoopForm | undefined) ?? 'auto';
  return want === 'direct' || !oneParamSet ? 'direct' : 'shifted';
}

/** GPTQ with the column loop on `rt`'s device (see the header). Check deviceLoopSupports first. */
export async function gptqQuantizeDeviceLoop(
  rt: ComputeRuntime, wVals: Float32Array | Float64Array, rows: number, cols: number,
  hVals: Float32Array | Float64Array, opts: GptqOptions & DeviceLoopHooks,
): Promise<GptqResult> {
  if (!deviceLoopSupports(opts, cols)) throw new RangeError(`the device GPTQ loop does not implement this config (clip ${opts.clip}, groupSize ${opts.groupSize}, blockSize ${opts.blockSize}, staticGroups ${opts.staticGroups})`);
  const t0 = now();
  const p = gptqPrepare(wVals, rows, cols, hVals, opts);
  const { blockSize: B, groupSize: G, sym, maxq, order, scale, zero } = p;
  const t1 = now();
  // Hinv on the device (U, sliced per batch by the graph) or on the host (rows fed per batch).
  let Hinv: Float64Array | undefined, U: Tensor | undefined;
  let choleskyFallback = false;
  try {
    if (opts.choleskyInverseUpperTensor) U = await opts.choleskyInverseUpperTensor(p.H, cols);
    else Hinv = await opts.choleskyInverseUpperAsync(p.H, cols);
  } catch (e) {
    Hinv = choleskyFallbackHinv(e, cols, p.where, opts);
    choleskyFallback = true;
  }
  const t2 = now();

  const Q = new Float32Array(rows * cols), codes = new Uint8Array(rows * cols), gIdx = new Int32Array(cols);
  const fixed: Record<string, Tensor> = {};
  let w: Tensor[] = [];
  let loss = 0;
  // Every batch's packed output stays on the device until the whole loop is enqueued: a readback per
  // batch made the host wait for the GPU and the GPU for the host's unpacking, 32–86 times per layer.
  const batches: { i1: number; sh: BatchShape; packed: Tensor }[] = [];
  try {
    if (G === -1) {
      fixed.s = await rt.upload(rt.host(Float32Array.from(scale), [rows, 1]));
      fixed.z = await rt.upload(rt.host(Float32Array.from(zero), [rows, 1]));
    }
    const chunks = chunkRows(rows, cols, opts.chunkBytes), rowChunks = chunks.map(([r0, r1]) => r1 - r0);
    for (const [r0, r1] of chunks) w.push(await rt.upload(rt.host(Float32Array.from(p.W.subarray(r0 * cols, r1 * cols)), [r1 - r0, cols])));
    for (let i1 = 0; i1 < cols; i1 += B) {
      const i2 = Math.min(i1 + B, cols), count = i2 - i1, C = cols - i1;
      const sh: BatchShape = { form: loopForm(opts.loopForm, G, count), hFrom: U ? 'device' : 'host', rowChunks, count, G, sym, maxq, tail: i2 < cols };
      const feeds: Record<string, Tensor> = { ...fixed, ...Object.fromEntries(w.map((t, k) => [`w${k}`, t])) };
      if (U) {
        feeds.u = U;
        feeds.hb = rt.hostI64([i1, i1]);
        feeds.he = rt.hostI64([i2, cols]);
      } else {
        const h = new Float32Array(count * C), invd = new Float32Array(count);
        for (let i = 0; i < count; i++) {
          const k = i1 + i;
          invd[i] = 1 / Hinv![k * cols + k];
          for (let j = 0; j < C; j++) h[i * C + j] = Hinv![k * cols + i1 + j];
        }
        feeds.h = rt.host(h, [count, C]);
        feeds.invd = rt.host(invd, [1, count]);
      }
      const key = `gptq/loop|${sh.form}|${sh.hFrom}|${rowChunks.join(',')}|${count}|${G}|${sym ? 's' : 'a'}|${maxq}|${sh.tail ? 't' : ''}`;
      const s = await rt.session(key, batchModel(sh), 'device');
      const out = await rt.run(s, feeds);
      rt.release(...w);
      w = sh.tail ? rowChunks.map((_, k) => out[`wn${k}`]) : [];
      batches.push({ i1, sh, packed: out.packed });
    }
    // Unpack: codes in quantization order → original columns; group params; loss.
    while (batches.length > 0) {
      const { i1, sh, packed } = batches.shift()!;
      const count = sh.count;
      const pk = await rt.download(packed);
      rt.release(packed);
      const P = packedWidth(sh);
      const ng = G === -1 ? 0 : Math.ceil(count / G);
      // Per column of the batch: its original column and its group slot (hoisted out of the row loop:
      // this unpacking is host time on the critical path, 45 M values for a 7B MLP layer).
      const colOf = new Int32Array(count), slotOf = new Int32Array(count);
      for (let i = 0; i < count; i++) {
        colOf[i] = order[i1 + i];
        slotOf[i] = G === -1 ? 0 : Math.floor((i1 + i) / G);
      }
      for (let r = 0; r < rows; r++) {
        const o = r * P, rowOut = r * cols, rowG = r * p.G;
        for (let a = 0; a < ng; a++) {
          const slot = Math.floor((i1 + a * G) / G);
          scale[rowG + slot] = pk[o + count + a];
          zero[rowG + slot] = sym ? (maxq + 1) / 2 : pk[o + count + ng + a];
        }
        for (let i = 0; i < count; i++) {
          const code = pk[o + i], col = rowOut + colOf[i], g = rowG + slotOf[i];
          codes[col] = code;
          Q[col] = dequantizeCode(code, scale[g], zero[g]);
        }
        loss += pk[o + P - 1] / 2;
      }
      for (let i = 0; i < count; i++) gIdx[order[i1 + i]] = G === -1 ? 0 : Math.floor((i1 + i) / G);
    }
  } finally {
    rt.release(...w, U, fixed.s, fixed.z, ...batches.map((b) => b.packed));
  }
  const t3 = now();
  return {
    Q, codes, scale, zero, gIdx, groups: p.G,
    perm: order, invPerm: invertPermutation(order),
    loss, deadColumns: p.deadColumns, damp: p.damp, choleskyFallback,
    seconds: { prep: t1 - t0, cholesky: t2 - t1, columnLoop: t3 - t2, lazyUpdate: 0, total: t3 - t0 },
  };
}
