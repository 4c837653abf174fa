// R1SVD (r1svd.ts) with A = W·diag(α) resident on an ONNX Runtime device and read-only: every
// power-iteration mat-vec A·s / Aᵀ·y is one ORT MatMul run (only the n- or m-vector goes up and the
// product comes down: a few KB), and A is never deflated. Instead the factors already found are
// applied as a correction on the host (float64, O((m+n)·k)):
//   A_k·s  = A·s  − Û·(Σ̂·(V̂ᵀ·s)),      A_kᵀ·y = Aᵀ·y − V̂ᵀ·(Σ̂·(Ûᵀ·y)),
// with exactly the stored (rounded) factors, so this equals the deflating loop in exact arithmetic
// (and avoids the float32 rounding of the deflated copy). Why: the CPU-pool loop paid ~7 synchronised
// passes over a 64–180 MB A per rank (1.5–3.5 s on the H100 host); on the device a pass is ~20 µs plus
// the run latency. Big A is split into row chunks (≤ 64 MiB each, the WebGPU buffer size the device
// guide verified); one graph takes all chunks (Concat for A·s, a sum of per-chunk products for Aᵀ·y).
// Precision: device sums are float32 (vs float64 over float32 A on the CPU): the stored factors agree
// to float32 rounding, FP8 codes can flip at rounding boundaries (tested through reconstruction error).

import { GraphBuilder, type Value } from '../compute/graph';
import type { ComputeRuntime, Tensor } from '../compute/runtime';
import { frob2 } from './lopro_mat';
import { R1svdFactorSet, r1svdRoundsAsync, type LowRankFactors, type R1svdOptions } from './r1svd';

const CHUNK_BYTES = Number(process.env.LOPRO_DEVICE_CHUNK_MB ?? 64) * 2 ** 20;

/** Row ranges of A's chunks. */
export function chunkRows(m: number, n: number, chunkBytes = CHUNK_BYTES): [number, number][] {
  const step = Math.max(1, Math.min(m, Math.floor(chunkBytes / (4 * n))));
  const out: [number, number][] = [];
  for (let r0 = 0; r0 < m; r0 += step) out.push([r0, Math.min(m, r0 + step)]);
  return out;
}

/** y (m×1) = [A_0; A_1; …]·x: one MatMul per chunk, concatenated. */
function mvModel(chunks: [number, number][], n: number): () => Uint8Array {
  return () => {
    const g = new GraphBuilder('r1svd_mv');
    const x = g.input('x', 'float32', [n, 1]);
    const parts = chunks.map(([r0, r1], c) => g.op('MatMul', [g.input(`a${c}`, 'float32', [r1 - r0, n]), x]));
    g.output(parts.length === 1 ? parts[0] : g.op('Concat', parts, { axis: 0 }), 'y');
    return g.toModel();
  };
}

/** z (k×n) = Σ_c Y[:, rows of c]·A_c, with Y k×m (k = 1 for the power iteration, r for the energy check). */
function mtvModel(chunks: [number, number][], m: number, n: number, k: number): () => Uint8Array {
  return () => {
    const g = new GraphBuilder('r1svd_mtv');
    const y = g.input('y', 'float32', [k, m]);
    let acc: Value | undefined;
    chunks.forEach(([r0, r1], c) => {
      const yc = chunks.length === 1 ? y : g.op('Slice', [y, g.constI64([r0]), g.constI64([r1]), g.constI64([1])]);
      const p = g.op('MatMul', [yc, g.input(`a${c}`, 'float32', [r1 - r0, n])]);
      acc = acc ? g.op('Add', [acc, p]) : p;
    });
    g.output(acc!, 'z');
    return g.toModel();
  };
}

export interface DeviceR1svdStats {
  runs: number;
  uploadSeconds: number;
  matvecSeconds: number;
}

/**
 * r1svd (r1svd.ts) with A's mat-vecs on `rt`'s EP. `A` (m×n, float32) is uploaded once and never
 * changed; the caller keeps ownership. Same start vectors (same seed sequence), same rounding.
 */
export async function r1svdDevice(rt: ComputeRuntime, A: Float32Array, m: number, n: number, opts: R1svdOptions & { chunkBytes?: number }, stats?: DeviceR1svdStats): Promise<LowRankFactors> {
  const round = opts.roundFactors !== false;
  const rMax = Math.max(0, Math.min(opts.rank, m, n));
  const total = frob2(A);
  const chunks = chunkRows(m, n, opts.chunkBytes);
  const key = `${m}x${n}|${chunks.map((c) => c[1]).join(',')}`;
  const st = stats ?? { runs: 0, uploadSeconds: 0, matvecSeconds: 0 };
  let t0 = performance.now();
  const aT: Record<string, Tensor> = {};
  for (let c = 0; c < chunks.length; c++) {
    const [r0, r1] = chunks[c];
    aT[`a${c}`] = await rt.upload(rt.host(A.slice(r0 * n, r1 * n), [r1 - r0, n])); // slice: a plain buffer (ORT refuses shared ones)
  }
  st.uploadSeconds += (performance.now() - t0) / 1000;
  t0 = performance.now();
  const sMv = await rt.session(`r1svd/mv|${key}`, mvModel(chunks, n), 'host');
  const sMtv = await rt.session(`r1svd/mtv|${key}|1`, mtvModel(chunks, m, n, 1), 'host');
  const x32 = new Float32Array(n), y32 = new Float32Array(m);
  const f = new R1svdFactorSet(m, n, round);
  const { Ucols, Vrows, sig } = f;
  const coef = new Float64Array(rMax);
  // out = A_k·x (k = factors found so far).
  const mv = async (x: Float64Array, out: Float64Array) => {
    for (let j = 0; j < n; j++) x32[j] = x[j];
    const r = await rt.run(sMv, { ...aT, x: rt.host(x32, [n, 1]) });
    st.runs++;
    const yd = r.y.data as Float32Array;
    for (let i = 0; i < m; i++) out[i] = yd[i];
    const k = sig.length;
    for (let q = 0; q < k; q++) {
      const v = Vrows[q];
      let d = 0;
      for (let j = 0; j < n; j++) d += v[j] * x[j];
      coef[q] = sig[q] * d;
    }
    for (let q = 0; q < k; q++) {
      const u = Ucols[q], c = coef[q];
      if (c !== 0) for (let i = 0; i < m; i++) out[i] -= c * u[i];
    }
  };
  // out = A_kᵀ·y.
  const mtv = async (y: Float64Array, out: Float64Array) => {
    for (let i = 0; i < m; i++) y32[i] = y[i];
    const r = await rt.run(sMtv, { ...aT, y: rt.host(y32, [1, m]) });
    st.runs++;
    const zd = r.z.data as Float32Array;
    for (let j = 0; j < n; j++) out[j] = zd[j];
    const k = sig.length;
    for (let q = 0; q < k; q++) {
      const u = Ucols[q];
      let d = 0;
      for (let i = 0; i < m; i++) d += u[i] * y[i];
      coef[q] = sig[q] * d;
    }
    for (let q = 0; q < k; q++) {
      const v = Vrows[q], c = coef[q];
      if (c !== 0) for (let j = 0; j < n; j++) out[j] -= c * v[j];
    }
  };
  try {
    await r1svdRoundsAsync(m, n, opts, f, mv, mtv); // the mat-vecs subtract f's stored factors: A stays as uploaded
    const laid = f.layout();
    const { U, V, sigma, rank: r } = laid;
    // ‖A − ÛΣ̂V̂‖² = ‖A‖² − 2·Σ_k σ̂_k·û_kᵀ(A·v̂_kᵀ)… computed as ‖A‖² − 2·tr(Σ̂·(ÛᵀA)·V̂ᵀ) + ‖ÛΣ̂V̂‖², with
    // ÛᵀA (r×n) in one device run: A itself is never deflated.
    let energy = 0;
    if (total > 0 && r > 0) {
      const Ut = new Float32Array(r * m);
      for (let k = 0; k < r; k++) for (let i = 0; i < m; i++) Ut[k * m + i] = U[i * r + k];
      const sE = await rt.session(`r1svd/mtv|${key}|${r}`, mtvModel(chunks, m, n, r), 'host');
      const UtA = (await rt.run(sE, { ...aT, y: rt.host(Ut, [r, m]) })).z.data as Float32Array;
      st.runs++;
      let cross = 0;
      for (let k = 0; k < r; k++) {
        let d = 0;
        for (let j = 0; j < n; j++) d += UtA[k * n + j] * V[k * n + j];
        cross += sigma[k] * d;
      }
      // ‖ÛΣ̂V̂‖² = Σ_kl σ̂_kσ̂_l (ÛᵀÛ)_kl (V̂V̂ᵀ)_kl
      let lr = 0;
      for (let k = 0; k < r; k++) for (let l = 0; l < r; l++) {
        let uu = 0, vv = 0;
        for (let i = 0; i < m; i++) uu += U[i * r + k] * U[i * r + l];
        for (let j = 0; j < n; j++) vv += V[k * n + j] * V[l * n + j];
        lr += sigma[k] * sigma[l] * uu * vv;
      }
      energy = 1 - Math.max(0, total - 2 * cross + lr) / total;
    }
    return { ...laid, energy };
  } finally {
    for (const t of Object.values(aT)) rt.release(t);
    st.matvecSeconds += (performance.now() - t0) / 1000;
  }
}
