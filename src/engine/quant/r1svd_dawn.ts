// R1SVD's mat-vecs on the engine's own WebGPU device (compute/dawn.ts): the backend of r1svd_device.ts's
// rank loop (r1svdOnBackend), with the same semantics as its ORT graph (rankModel): A resident and never
// deflated, the found factors applied as a correction, one rank's whole power iteration per submit.
// Why: through ORT a rank cost one graph run of ~18 ms (224 runs took 4.0 s per two 7B blocks), most of
// it per-node dispatch; here a rank is ~18 dispatches and two small readbacks (y, z).
//
// Kernels (float32, like the ORT graph): mv — y_i = A_i·x − Σ_k Uf_ik·t_k with t_k = sg_k·(Vf_k·x), one
// workgroup per row; mtv — z_j = Σ_i y_i·A_ij − Σ_k t_k·Vf_kj with t_k = sg_k·(Uf_:kᵀ·y), column sums over
// row slabs then a reduction over slabs; unit — v ← v/‖v‖ in one workgroup. The energy's Ûᵀ·A uses the
// generic GEMM of compute/wgsl_gemm.ts.

import type { DawnGpu } from '../compute/dawn';
import { gemmGroups, gemmWgsl, gemmWords } from '../compute/wgsl_gemm';
import type { LowRankFactors, R1svdOptions } from './r1svd';
import { r1svdOnBackend, type DeviceR1svdStats, type R1svdBackend } from './r1svd_device';

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

/** r1svd (r1svd.ts) with A's mat-vecs on `gpu`: r1svdDevice's rank loop over the Dawn backend. */
export async function r1svdDawn(gpu: DawnGpu, A: Float32Array, m: number, n: number, opts: R1svdOptions, stats?: DeviceR1svdStats): Promise<LowRankFactors> {
  if (4 * m * n > gpu.maxBindingBytes) throw new RangeError(`A (${m}×${n}) exceeds the device's largest binding (${gpu.maxBindingBytes} bytes)`);
  const K = Math.max(1, Math.min(opts.rank, m, n));
  return r1svdOnBackend(() => dawnBackend(gpu, A, m, n, K, opts.powerIters), A, m, n, opts, stats);
}

/** r1svdDawn of an A already on `gpu` (m×n float32, read only) whose ‖A‖² is `frob2` (quant/lopro_dawn.ts). */
export async function r1svdDawnResident(gpu: DawnGpu, A: GPUBuffer, frob2: number, m: number, n: number, opts: R1svdOptions, stats?: DeviceR1svdStats): Promise<LowRankFactors> {
  const K = Math.max(1, Math.min(opts.rank, m, n));
  return r1svdOnBackend(() => dawnBackend(gpu, A, m, n, K, opts.powerIters), { frob2 }, m, n, opts, stats);
}

async function dawnBackend(gpu: DawnGpu, A: Float32Array | GPUBuffer, m: number, n: number, K: number, iters: number): Promise<R1svdBackend> {
  const [vd, ud, mv, slabs, reduce, unit] = [
    await gpu.pipeline(factorDotWgsl('vd')), await gpu.pipeline(factorDotWgsl('ud')), await gpu.pipeline(MV_WGSL),
    await gpu.pipeline(MTV_SLABS_WGSL), await gpu.pipeline(MTV_REDUCE_WGSL), await gpu.pipeline(UNIT_WGSL),
  ];
  const nSlabs = Math.ceil(m / SLAB);
  const bufs: GPUBuffer[] = [];
  const own = (b: GPUBuffer) => (bufs.push(b), b);
  try {
    const Ab = A instanceof Float32Array ? own(await gpu.bufferFrom(A, 'r1svd A')) : A;
    const Uf = own(gpu.buffer(4 * m * K)), Vf = own(gpu.buffer(4 * K * n)), sg = own(gpu.buffer(4 * K));
    const s = own(gpu.buffer(4 * n)), y = own(gpu.buffer(4 * m)), z = own(gpu.buffer(4 * n)), t = own(gpu.buffer(4 * K));
    const part = own(gpu.buffer(4 * nSlabs * n));
    const u = own(gpu.uniforms([m, n, K, nSlabs]));
    const uUnitY = own(gpu.uniforms([m, n, K, nSlabs])); // unit() normalises p.m values: y
    const mvGroups: [number, number, number] = [Math.min(m, 65535), Math.ceil(m / 65535), 1];
    const g = {
      vdS: gpu.bindGroup(vd, [u, Vf, sg, s, t]), vdZ: gpu.bindGroup(vd, [u, Vf, sg, z, t]),
      mvS: gpu.bindGroup(mv, [u, Ab, Uf, t, s, y]), mvZ: gpu.bindGroup(mv, [u, Ab, Uf, t, z, y]),
      ud: gpu.bindGroup(ud, [u, Uf, sg, y, t]), slabs: gpu.bindGroup(slabs, [u, Ab, y, part]),
      reduce: gpu.bindGroup(reduce, [u, part, Vf, t, z]), unit: gpu.bindGroup(unit, [uUnitY, y]),
    };
    type Step = [GPUComputePipeline, GPUBindGroup, [number, number, number]];
    const mvFrom = (from: 'S' | 'Z'): Step[] => [[vd, from === 'S' ? g.vdS : g.vdZ, [K, 1, 1]], [mv, from === 'S' ? g.mvS : g.mvZ, mvGroups]];
    const mtv: Step[] = [[ud, g.ud, [K, 1, 1]], [slabs, g.slabs, [Math.ceil(n / 256), nSlabs, 1]], [reduce, g.reduce, [Math.ceil(n / 256), 1, 1]]];
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
        const UtB = gpu.buffer(Ut), C = gpu.buffer(4 * r * n);
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
