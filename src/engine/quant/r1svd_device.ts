// R1SVD (r1svd.ts) with A = W·diag(α) resident on an ONNX Runtime device and read-only: one ORT run
// per rank computes that rank's whole power iteration (the 2·powerIters + 2 mat-vecs A·s / Aᵀ·y and
// the normalisations, unrolled in one graph), and A is never deflated. Instead the factors already
// found are fed in (zero-padded to the rank) and applied as a correction inside the graph:
//   A_k·s  = A·s  − Û·(Σ̂·(V̂ᵀ·s)),      A_kᵀ·y = Aᵀ·y − V̂ᵀ·(Σ̂·(Ûᵀ·y)),
// with exactly the stored (rounded) factors, so this equals the deflating loop in exact arithmetic
// (and avoids the float32 rounding of the deflated copy). Only the start vector and the factors go
// up, y and z come down, per rank; the host does the rounding (FP8/FP16) that decides the next rank.
// Why: the CPU-pool loop paid ~7 synchronised passes over a 64–180 MB A per rank (1.5–3.5 s on the
// H100 host); one device run per mat-vec still paid the readback latency 96 times per layer
// (0.7–2 s, issue 5); a pass over A on the device is ~20 µs. Big A is split into row chunks (≤ 64 MiB each, the WebGPU buffer size the device
// guide verified); one graph takes all chunks (Concat for A·s, a sum of per-chunk products for Aᵀ·y).
// Precision: device sums are float32 (vs float64 over float32 A on the CPU): the stored factors agree
// to float32 rounding, FP8 codes can flip at rounding boundaries (tested through reconstruction error).

import { GraphBuilder, type Value } from '../compute/graph';
import type { ComputeRuntime, Tensor } from '../compute/runtime';
import { SeededRng, frob2, norm2 } from './lopro_mat';
import { R1svdFactorSet, type LowRankFactors, type R1svdOptions } from './r1svd';

const CHUNK_BYTES = Number(process.env.LOPRO_DEVICE_CHUNK_MB ?? 64) * 2 ** 20;

/** Row ranges of A's chunks. */
export function chunkRows(m: number, n: number, chunkBytes = CHUNK_BYTES): [number, number][] {
  const step = Math.max(1, Math.min(m, Math.floor(chunkBytes / (4 * n))));
  const out: [number, number][] = [];
  for (let r0 = 0; r0 < m; r0 += step) out.push([r0, Math.min(m, r0 + step)]);
  return out;
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

/**
 * One rank's power iteration (r1svd.ts r1svdRounds, unrolled): inputs the chunks a_c, the start
 * vector s [n, 1] and the factors found so far Uf [m, K], Vf [K, n], sg [1, K] (unused columns zero);
 * outputs y [m, 1] (unit) and z [1, n] = A_kᵀ·y, so σ = ‖z‖.
 */
function rankModel(chunks: [number, number][], m: number, n: number, K: number, iters: number): () => Uint8Array {
  return () => {
    const g = new GraphBuilder('r1svd_rank');
    const a = chunks.map(([r0, r1], c) => g.input(`a${c}`, 'float32', [r1 - r0, n]));
    const s = g.input('s', 'float32', [n, 1]);
    const Uf = g.input('uf', 'float32', [m, K]), Vf = g.input('vf', 'float32', [K, n]), sg = g.input('sg', 'float32', [1, K]);
    const sgCol = g.op('Reshape', [sg, g.constI64([K, 1])]);
    // A_k·x for a column x [n, 1] → [m, 1]
    const mv = (x: Value) => {
      const parts = a.map((ac) => g.op('MatMul', [ac, x]));
      const ax = parts.length === 1 ? parts[0] : g.op('Concat', parts, { axis: 0 });
      return g.op('Sub', [ax, g.op('MatMul', [Uf, g.op('Mul', [sgCol, g.op('MatMul', [Vf, x])])])]);
    };
    // A_kᵀ·y for a column y [m, 1] → row [1, n]
    const mtv = (y: Value) => {
      const yT = g.op('Reshape', [y, g.constI64([1, m])]);
      let acc: Value | undefined;
      chunks.forEach(([r0, r1], c) => {
        const yc = chunks.length === 1 ? yT : g.op('Slice', [yT, g.constI64([r0]), g.constI64([r1]), g.constI64([1])]);
        const p = g.op('MatMul', [yc, a[c]]);
        acc = acc ? g.op('Add', [acc, p]) : p;
      });
      return g.op('Sub', [acc!, g.op('MatMul', [g.op('Mul', [sg, g.op('MatMul', [yT, Uf])]), Vf])]);
    };
    const unit = (v: Value) => g.op('Div', [v, g.op('Sqrt', [g.op('ReduceSum', [g.op('Mul', [v, v])], { keepdims: 1 })])]);
    const col = (row: Value) => g.op('Reshape', [row, g.constI64([n, 1])]);
    let y = mv(s);
    for (let it = 0; it < iters; it++) y = unit(mv(col(mtv(y))));
    y = unit(y);
    g.output(y, 'y');
    g.output(mtv(y), 'z');
    return g.toModel();
  };
}

export interface DeviceR1svdStats {
  runs: number;
  uploadSeconds: number;
  matvecSeconds: number;
}

/**
 * What the rank loop needs from a device holding A (never deflated): one rank's power iteration with the
 * factors found so far as the correction (rankModel's semantics: y = A_k·s, iterated, unit y, z = A_kᵀ·y),
 * and Ûᵀ·A for the energy check. ORT (rankModel/mtvModel below) and Dawn (r1svd_dawn.ts) implement it.
 */
export interface R1svdBackend {
  /** Uf [m, K], Vf [K, n], sg [K]: the factors so far (zero beyond the found ones). */
  rank(s: Float32Array, Uf: Float32Array, Vf: Float32Array, sg: Float32Array): Promise<{ y: Float32Array; z: Float32Array }>;
  /** Ut [r, m] → Ut·A [r, n]. */
  project(Ut: Float32Array, r: number): Promise<Float32Array>;
  release(): void;
}

/** ORT's backend: A uploaded in row chunks, one run per rank (rankModel), one for the projection. */
async function ortBackend(rt: ComputeRuntime, A: Float32Array, m: number, n: number, K: number, iters: number, chunkBytes?: number): Promise<R1svdBackend> {
  const chunks = chunkRows(m, n, chunkBytes);
  const key = `${m}x${n}|${chunks.map((c) => c[1]).join(',')}`;
  const aT: Record<string, Tensor> = {};
  try {
    for (let c = 0; c < chunks.length; c++) {
      const [r0, r1] = chunks[c];
      aT[`a${c}`] = await rt.upload(rt.host(A.slice(r0 * n, r1 * n), [r1 - r0, n])); // slice: a plain buffer (ORT refuses shared ones)
    }
  } catch (e) {
    for (const t of Object.values(aT)) rt.release(t);
    throw e;
  }
  const sRank = await rt.session(`r1svd/rank|${key}|${K}|${iters}`, rankModel(chunks, m, n, K, iters), 'host');
  return {
    async rank(s, Uf, Vf, sg) {
      const r = await rt.run(sRank, { ...aT, s: rt.host(s, [n, 1]), uf: rt.host(Uf, [m, K]), vf: rt.host(Vf, [K, n]), sg: rt.host(sg, [1, K]) });
      return { y: r.y.data as Float32Array, z: r.z.data as Float32Array };
    },
    async project(Ut, r) {
      const sE = await rt.session(`r1svd/mtv|${key}|${r}`, mtvModel(chunks, m, n, r), 'host');
      return (await rt.run(sE, { ...aT, y: rt.host(Ut, [r, m]) })).z.data as Float32Array;
    },
    release() {
      for (const t of Object.values(aT)) rt.release(t);
    },
  };
}

/**
 * r1svd (r1svd.ts) with A's mat-vecs on `rt`'s EP. `A` (m×n, float32) is uploaded once and never
 * changed; the caller keeps ownership. Same start vectors (same seed sequence), same rounding.
 */
export async function r1svdDevice(rt: ComputeRuntime, A: Float32Array, m: number, n: number, opts: R1svdOptions & { chunkBytes?: number }, stats?: DeviceR1svdStats): Promise<LowRankFactors> {
  const K = Math.max(1, Math.max(0, Math.min(opts.rank, m, n)));
  return r1svdOnBackend(() => ortBackend(rt, A, m, n, K, opts.powerIters, opts.chunkBytes), A, m, n, opts, stats);
}

/** The rank loop of r1svdDevice over any backend (the host keeps the start vectors, the rounding and the energy). */
export async function r1svdOnBackend(
  open: () => Promise<R1svdBackend>, A: Float32Array | { frob2: number }, m: number, n: number, opts: R1svdOptions, stats?: DeviceR1svdStats,
): Promise<LowRankFactors> {
  const round = opts.roundFactors !== false;
  const rMax = Math.max(0, Math.min(opts.rank, m, n));
  const total = A instanceof Float32Array ? frob2(A) : A.frob2; // ‖A‖² (given when A never was on the host)
  const st = stats ?? { runs: 0, uploadSeconds: 0, matvecSeconds: 0 };
  let t0 = performance.now();
  const dev = await open();
  st.uploadSeconds += (performance.now() - t0) / 1000;
  t0 = performance.now();
  const f = new R1svdFactorSet(m, n, round);
  const K = Math.max(1, rMax);
  // The factors found so far, as the backends take them (float32, zero columns for ranks not yet found).
  const Uf = new Float32Array(m * K), Vf = new Float32Array(K * n), sg = new Float32Array(K);
  const rng = new SeededRng(opts.seed);
  const s32 = new Float32Array(n);
  try {
    for (let k = 0; k < rMax; k++) {
      for (let j = 0; j < n; j++) s32[j] = rng.gaussian(); // the start vectors of r1svd.ts, in order
      const r = await dev.rank(s32, Uf, Vf, sg);
      st.runs++;
      const y = Float64Array.from(r.y), z = Float64Array.from(r.z);
      const ny = norm2(y);
      if (!(ny > 0) || !Number.isFinite(ny)) break; // A is (numerically) exactly rank k
      for (let i = 0; i < m; i++) y[i] /= ny;
      const sigma = norm2(z) / ny;
      if (!(sigma > 0) || !Number.isFinite(sigma)) break;
      for (let j = 0; j < n; j++) z[j] /= ny;
      const { uHat, vHat, sHat } = f.add(y, z, sigma);
      for (let i = 0; i < m; i++) Uf[i * K + k] = uHat[i];
      Vf.set(vHat, k * n);
      sg[k] = sHat;
    }
    const laid = f.layout();
    const { U, V, sigma, rank: r } = laid;
    // ‖A − ÛΣ̂V̂‖² = ‖A‖² − 2·Σ_k σ̂_k·û_kᵀ(A·v̂_kᵀ)… computed as ‖A‖² − 2·tr(Σ̂·(ÛᵀA)·V̂ᵀ) + ‖ÛΣ̂V̂‖², with
    // ÛᵀA (r×n) in one device run: A itself is never deflated.
    let energy = 0;
    if (total > 0 && r > 0) {
      const Ut = new Float32Array(r * m);
      for (let k = 0; k < r; k++) for (let i = 0; i < m; i++) Ut[k * m + i] = U[i * r + k];
      const UtA = await dev.project(Ut, r);
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
    dev.release();
    st.matvecSeconds += (performance.now() - t0) / 1000;
  }
}
