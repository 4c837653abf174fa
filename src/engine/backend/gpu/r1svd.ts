// R1SVD (quant/r1svd.ts) on the engine's own WebGPU device: A resident and never deflated, the found
// factors applied as a correction, one rank's whole power iteration per submit (~18 dispatches and two
// small readbacks, y and z); the host keeps the start vectors, the factor rounding and the energy.
//
// Kernels (float32, like the ORT graph): mv — y_i = A_i·x − Σ_k Uf_ik·t_k with t_k = sg_k·(Vf_k·x), one
// workgroup per row; mtv — z_j = Σ_i y_i·A_ij − Σ_k t_k·Vf_kj with t_k = sg_k·(Uf_:kᵀ·y), column sums over
// row slabs then a reduction over slabs; unit — v ← v/‖v‖ in one workgroup. The energy's Ûᵀ·A uses the
// generic GEMM of compute/wgsl_gemm.ts.

import type { DawnGpu } from './dawn';
import { gemmGroups, gemmWgsl, gemmWords } from './wgsl_gemm';
import { R1svdFactorSet, type LowRankFactors, type R1svdOptions } from '../../quant/r1svd';
import { SeededRng, norm2 } from '../../quant/lopro_mat';

const PARAMS = 'struct Params { m: u32, n: u32, K: u32, slabs: u32 }';
/** Rows per slab of the column sums (mtv's first pass). */
const SLAB = 64;

/** t_k = sg_k · Σ_j Vf[k, j]·x_j (vd) or sg_k · Σ_i Uf[i, k]·y_i (ud): one workgroup per k. */
function factorDotWgsl(kind: 'vd' | 'ud'): string {
  const len = kind === 'vd' ? 'p.n' : 'p.m';
  const at = kind === 'vd' ? 'F[k * p.n + j]' : 'F[j * p.K + k]';
  return /* wgsl */ `
${PARAMS}
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> F: array<f32>;
@group(0) @binding(2) var<storage, read> sg: array<f32>;
@group(0) @binding(3) var<storage, read> x: array<f32>;
@group(0) @binding(4) var<storage, read_write> t: array<f32>;
var<workgroup> part: array<f32, 256>;
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) l: u32) {
  let k = wg.x;
  var s = 0.0;
  for (var j = l; j < ${len}; j += 256u) { s = fma(${at}, x[j], s); }
  part[l] = s;
  workgroupBarrier();
  for (var w = 128u; w > 0u; w >>= 1u) {
    if (l < w) { part[l] = part[l] + part[l + w]; }
    workgroupBarrier();
  }
  if (l == 0u) { t[k] = sg[k] * part[0]; }
}
`;
}

/** y_i = A_i·x − Σ_k Uf[i, k]·t_k: one workgroup per row (rows beyond 65535 wrap into workgroup_id.y). */
const MV_WGSL = /* wgsl */ `
${PARAMS}
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> A: array<f32>;
@group(0) @binding(2) var<storage, read> Uf: array<f32>;
@group(0) @binding(3) var<storage, read> t: array<f32>;
@group(0) @binding(4) var<storage, read> x: array<f32>;
@group(0) @binding(5) var<storage, read_write> y: array<f32>;
var<workgroup> part: array<f32, 256>;
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) l: u32) {
  let i = wg.y * 65535u + wg.x;
  if (i >= p.m) { return; }
  var s = 0.0;
  let row = i * p.n;
  for (var j = l; j < p.n; j += 256u) { s = fma(A[row + j], x[j], s); }
  part[l] = s;
  workgroupBarrier();
  for (var w = 128u; w > 0u; w >>= 1u) {
    if (l < w) { part[l] = part[l] + part[l + w]; }
    workgroupBarrier();
  }
  if (l == 0u) {
    var c = 0.0;
    for (var k = 0u; k < p.K; k++) { c = fma(Uf[i * p.K + k], t[k], c); }
    y[i] = part[0] - c;
  }
}
`;

/** Column sums of y_i·A_ij over a slab of SLAB rows: part[slab, j]. */
const MTV_SLABS_WGSL = /* wgsl */ `
${PARAMS}
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> A: array<f32>;
@group(0) @binding(2) var<storage, read> y: array<f32>;
@group(0) @binding(3) var<storage, read_write> part: array<f32>;
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(workgroup_id) wg: vec3u) {
  let j = gid.x;
  if (j >= p.n) { return; }
  let r0 = wg.y * ${SLAB}u;
  let r1 = min(r0 + ${SLAB}u, p.m);
  var s = 0.0;
  for (var i = r0; i < r1; i++) { s = fma(y[i], A[i * p.n + j], s); }
  part[wg.y * p.n + j] = s;
}
`;

/** z_j = Σ_slabs part[slab, j] − Σ_k t_k·Vf[k, j]. */
const MTV_REDUCE_WGSL = /* wgsl */ `
${PARAMS}
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> part: array<f32>;
@group(0) @binding(2) var<storage, read> Vf: array<f32>;
@group(0) @binding(3) var<storage, read> t: array<f32>;
@group(0) @binding(4) var<storage, read_write> z: array<f32>;
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let j = gid.x;
  if (j >= p.n) { return; }
  var s = 0.0;
  for (var b = 0u; b < p.slabs; b++) { s = s + part[b * p.n + j]; }
  var c = 0.0;
  for (var k = 0u; k < p.K; k++) { c = fma(t[k], Vf[k * p.n + j], c); }
  z[j] = s - c;
}
`;

/** v ← v/‖v‖ (length p.m): one workgroup. */
const UNIT_WGSL = /* wgsl */ `
${PARAMS}
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> v: array<f32>;
var<workgroup> part: array<f32, 256>;
@compute @workgroup_size(256)
fn main(@builtin(local_invocation_index) l: u32) {
  var s = 0.0;
  for (var i = l; i < p.m; i += 256u) { s = fma(v[i], v[i], s); }
  part[l] = s;
  workgroupBarrier();
  for (var w = 128u; w > 0u; w >>= 1u) {
    if (l < w) { part[l] = part[l] + part[l + w]; }
    workgroupBarrier();
  }
  let inv = 1.0 / sqrt(part[0]);
  workgroupBarrier();
  for (var i = l; i < p.m; i += 256u) { v[i] = v[i] * inv; }
}
`;

/**
 * R1SVD (quant/r1svd.ts) of A (m×n float32, resident on `gpu`, read only) whose ‖A‖² is `frob2`. A is never
 * deflated: the factors found so far are fed to each rank's power iteration as a correction, with exactly the
 * stored (rounded) factors, so this equals the deflating loop in exact arithmetic. The host keeps the start
 * vectors (the same seed sequence as r1svd.ts), the FP8/FP16 rounding that decides the next rank, and the energy.
 */
export async function r1svdOnDawn(gpu: DawnGpu, A: GPUBuffer, frob2: number, m: number, n: number, opts: R1svdOptions): Promise<LowRankFactors> {
  const round = opts.roundFactors !== false;
  const rMax = Math.max(0, Math.min(opts.rank, m, n));
  const K = Math.max(1, rMax);
  const dev = await dawnBackend(gpu, A, m, n, K, opts.powerIters);
  const f = new R1svdFactorSet(m, n, round);
  // The factors found so far, as the kernels take them (float32, zero columns for ranks not yet found).
  const Uf = new Float32Array(m * K),
    Vf = new Float32Array(K * n),
    sg = new Float32Array(K);
  const rng = new SeededRng(opts.seed);
  const s32 = new Float32Array(n);
  try {
    for (let k = 0; k < rMax; k++) {
      for (let j = 0; j < n; j++) s32[j] = rng.gaussian(); // the start vectors of r1svd.ts, in order
      const r = await dev.rank(s32, Uf, Vf, sg);
      const y = Float64Array.from(r.y),
        z = Float64Array.from(r.z);
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
    // ‖A − ÛΣ̂V̂‖² = ‖A‖² − 2·tr(Σ̂·(ÛᵀA)·V̂ᵀ) + ‖ÛΣ̂V̂‖², with ÛᵀA (r×n) in one GEMM: A itself is never deflated.
    let energy = 0;
    if (frob2 > 0 && r > 0) {
      const Ut = new Float32Array(r * m);
      for (let k = 0; k < r; k++) for (let i = 0; i < m; i++) Ut[k * m + i] = U[i * r + k];
      const UtA = await dev.project(Ut, r);
      let cross = 0;
      for (let k = 0; k < r; k++) {
        let d = 0;
        for (let j = 0; j < n; j++) d += UtA[k * n + j] * V[k * n + j];
        cross += sigma[k] * d;
      }
      // ‖ÛΣ̂V̂‖² = Σ_kl σ̂_kσ̂_l (ÛᵀÛ)_kl (V̂V̂ᵀ)_kl
      let lr = 0;
      for (let k = 0; k < r; k++)
        for (let l = 0; l < r; l++) {
          let uu = 0,
            vv = 0;
          for (let i = 0; i < m; i++) uu += U[i * r + k] * U[i * r + l];
          for (let j = 0; j < n; j++) vv += V[k * n + j] * V[l * n + j];
          lr += sigma[k] * sigma[l] * uu * vv;
        }
      energy = 1 - Math.max(0, frob2 - 2 * cross + lr) / frob2;
    }
    return { ...laid, energy };
  } finally {
    dev.release();
  }
}

/** One rank's power iteration on the device (with the factors so far as the correction), and Ûᵀ·A for the energy. */
interface RankDevice {
  /** Uf [m, K], Vf [K, n], sg [K]: the factors so far (zero beyond the found ones). */
  rank(s: Float32Array, Uf: Float32Array, Vf: Float32Array, sg: Float32Array): Promise<{ y: Float32Array; z: Float32Array }>;
  /** Ut [r, m] → Ut·A [r, n]. */
  project(Ut: Float32Array, r: number): Promise<Float32Array>;
  release(): void;
}

async function dawnBackend(gpu: DawnGpu, A: GPUBuffer, m: number, n: number, K: number, iters: number): Promise<RankDevice> {
  const [vd, ud, mv, slabs, reduce, unit] = [
    await gpu.pipeline(factorDotWgsl('vd')),
    await gpu.pipeline(factorDotWgsl('ud')),
    await gpu.pipeline(MV_WGSL),
    await gpu.pipeline(MTV_SLABS_WGSL),
    await gpu.pipeline(MTV_REDUCE_WGSL),
    await gpu.pipeline(UNIT_WGSL),
  ];
  const nSlabs = Math.ceil(m / SLAB);
  const bufs: GPUBuffer[] = [];
  const own = (b: GPUBuffer) => (bufs.push(b), b);
  try {
    const Ab = A;
    const Uf = own(gpu.buffer(4 * m * K)),
      Vf = own(gpu.buffer(4 * K * n)),
      sg = own(gpu.buffer(4 * K));
    const s = own(gpu.buffer(4 * n)),
      y = own(gpu.buffer(4 * m)),
      z = own(gpu.buffer(4 * n)),
      t = own(gpu.buffer(4 * K));
    const part = own(gpu.buffer(4 * nSlabs * n));
    const u = own(gpu.uniforms([m, n, K, nSlabs]));
    const uUnitY = own(gpu.uniforms([m, n, K, nSlabs])); // unit() normalises p.m values: y
    const mvGroups: [number, number, number] = [Math.min(m, 65535), Math.ceil(m / 65535), 1];
    const g = {
      vdS: gpu.bindGroup(vd, [u, Vf, sg, s, t]),
      vdZ: gpu.bindGroup(vd, [u, Vf, sg, z, t]),
      mvS: gpu.bindGroup(mv, [u, Ab, Uf, t, s, y]),
      mvZ: gpu.bindGroup(mv, [u, Ab, Uf, t, z, y]),
      ud: gpu.bindGroup(ud, [u, Uf, sg, y, t]),
      slabs: gpu.bindGroup(slabs, [u, Ab, y, part]),
      reduce: gpu.bindGroup(reduce, [u, part, Vf, t, z]),
      unit: gpu.bindGroup(unit, [uUnitY, y]),
    };
    type Step = [GPUComputePipeline, GPUBindGroup, [number, number, number]];
    const mvFrom = (from: 'S' | 'Z'): Step[] => [
      [vd, from === 'S' ? g.vdS : g.vdZ, [K, 1, 1]],
      [mv, from === 'S' ? g.mvS : g.mvZ, mvGroups],
    ];
    const mtv: Step[] = [
      [ud, g.ud, [K, 1, 1]],
      [slabs, g.slabs, [Math.ceil(n / 256), nSlabs, 1]],
      [reduce, g.reduce, [Math.ceil(n / 256), 1, 1]],
    ];
    const unitY: Step = [unit, g.unit, [1, 1, 1]];
    // rankModel: y = A_k·s; iters × (y = unit(A_k·(A_kᵀ·y))); y = unit(y); z = A_kᵀ·y.
    const steps: Step[] = [...mvFrom('S')];
    for (let it = 0; it < iters; it++) steps.push(...mtv, ...mvFrom('Z'), unitY);
    steps.push(unitY, ...mtv);
    return {
      async rank(s32, Uf32, Vf32, sg32) {
        gpu.write(s, s32);
        gpu.write(Uf, Uf32);
        gpu.write(Vf, Vf32);
        gpu.write(sg, sg32);
        await gpu.submit((enc) => {
          const pass = enc.beginComputePass();
          for (const [pipe, group, size] of steps) {
            pass.setPipeline(pipe);
            pass.setBindGroup(0, group);
            pass.dispatchWorkgroups(...size);
          }
          pass.end();
        });
        gpu.counters.dispatches += steps.length;
        const [yb, zb] = await Promise.all([gpu.read(y, 4 * m), gpu.read(z, 4 * n)]);
        return { y: new Float32Array(yb), z: new Float32Array(zb) };
      },
      async project(Ut, r) {
        const gemm = await gpu.pipeline(gemmWgsl(false, false, false, false));
        const UtB = gpu.buffer(Ut),
          C = gpu.buffer(4 * r * n);
        const gu = gpu.uniforms(gemmWords({ M: r, N: n, K: m, lda: m, ldb: n, ldc: n, offA: 0, offB: 0, offC: 0, alpha: 1, beta: 0 }));
        try {
          const group = gpu.bindGroup(gemm, [gu, UtB, Ab, C]);
          await gpu.submit((enc) => {
            const pass = enc.beginComputePass();
            pass.setPipeline(gemm);
            pass.setBindGroup(0, group);
            pass.dispatchWorkgroups(...gemmGroups(r, n));
            pass.end();
          });
          gpu.counters.dispatches++;
          return new Float32Array(await gpu.read(C, 4 * r * n));
        } finally {
          for (const b of [UtB, C, gu]) b.destroy();
        }
      },
      release() {
        for (const b of bufs) b.destroy();
      },
    };
  } catch (e) {
    for (const b of bufs) b.destroy();
    throw e;
  }
}
