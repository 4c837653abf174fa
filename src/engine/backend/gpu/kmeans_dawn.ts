// GPTVQ's codebook k-means on the GPU backend's device (the kernels: kmeans_wgsl.ts): the points are read from W
// where it lies, the codebook is written rounded to FP16 where the codeword search (gptvq_wgsl.ts) reads it, so
// a group's k-means is a list of dispatches with no readback. The seeding's random draws come from the host
// (quant/kmeans.ts's SeededRng stream, seed + j), which draws them without looking at the data.

import type { Binding, DawnGpu, Dispatch } from './dawn';
import type { LayerKernels } from './kernels';
import { KM_BIND, WG, kmAssignWgsl, kmBestWgsl, kmPickWgsl, kmRoundWgsl, kmSumsWgsl, kmUpdateWgsl, kmeansWords } from './kmeans_wgsl';
import { SeededRng } from '../../quant/lopro_mat';

/**
 * Points per invocation and chunks (workgroups of WG) for N points: at most 1024 chunks (the seeding scans their
 * sums in one workgroup; more would only lengthen that scan), and their partial sums (chunks × K·D × 2 floats)
 * at most 2²² floats.
 */
export function kmeansChunks(N: number, KD: number, maxChunks = 1024): { ppt: number; nc: number } {
  const cap = Math.max(1, Math.min(maxChunks, Math.floor(2 ** 22 / (2 * KD))));
  const ppt = Math.max(1, Math.ceil(N / (WG * cap)));
  return { ppt, nc: Math.max(1, Math.ceil(N / (WG * ppt))) };
}

/**
 * The seeding draws of every group (kmeans.ts: SeededRng(seed + j), one next() per centre, the first as int(N)):
 * per (group, centre) u as float32 bits and ⌊u·N⌋.
 */
export function seedDraws(groups: readonly { j: number; N: number }[], K: number, seed: number): Uint32Array {
  const out = new Uint32Array(2 * groups.length * K);
  const f = new Float32Array(out.buffer);
  groups.forEach(({ j, N }, gi) => {
    const rng = new SeededRng(seed + j);
    for (let c = 0; c < K; c++) {
      const u = rng.next();
      f[2 * (gi * K + c)] = u;
      out[2 * (gi * K + c) + 1] = Math.floor(u * N);
    }
  });
  return out;
}

type KmBuf = keyof typeof KM_BIND;

/**
 * The k-means of the GPTVQ groups of one rows×cols W on the device: buffers sized for the widest group, the
 * pipelines, and per group the dispatches (steps) that leave its FP16-rounded codebook in `codebooks`.
 */
export class DawnKMeans {
  private readonly bufs: Partial<Record<KmBuf, GPUBuffer>>;
  private readonly uniforms: GPUBuffer[] = [];
  private constructor(
    private readonly gpu: DawnGpu,
    private readonly k: LayerKernels,
    private readonly pipes: Record<'pick' | 'best' | 'assign' | 'sums' | 'update' | 'round', GPUComputePipeline>,
    bufs: Partial<Record<KmBuf, GPUBuffer>>,
    private readonly rows: number,
    private readonly cols: number,
    private readonly D: number,
    private readonly K: number,
    private readonly iters: number,
    private readonly maxChunks: number,
  ) {
    this.bufs = bufs;
  }

  /**
   * W: the rows×cols float32 points' matrix, colW: cols per-column weights, draws: seedDraws of the groups,
   * codebooks: where group gi's K×D rounded centres go (at gi·K·D); maxPerRow: the widest group's vectors per row;
   * maxChunks: at most this many workgroups of the per-point kernels, more points each (tests lower it).
   */
  static async create(
    gpu: DawnGpu,
    k: LayerKernels,
    io: { W: GPUBuffer; colW: GPUBuffer; draws: GPUBuffer; codebooks: GPUBuffer },
    rows: number,
    cols: number,
    D: number,
    K: number,
    maxPerRow: number,
    iters: number,
    maxChunks = 1024,
  ): Promise<DawnKMeans> {
    const s = { D, K };
    const [pick, best, assign, sums, update, round] = await Promise.all(
      [kmPickWgsl(s), kmBestWgsl(s), kmAssignWgsl(s), kmSumsWgsl(s), kmUpdateWgsl(s), kmRoundWgsl(s)].map((c) => gpu.pipeline(c)),
    );
    const N = rows * maxPerRow,
      KD = K * D;
    const { nc } = kmeansChunks(N, KD, maxChunks);
    const f = (n: number, label: string) => k.own(gpu.buffer(4 * n, label));
    const bufs = {
      ...io,
      ctl: f(8, 'k-means ctl'),
      C: f(KD, 'k-means centres'),
      best: f(N, 'k-means best'),
      chunk: f(nc, 'k-means chunk sums'),
      assign: f(N, 'k-means assign'),
      pd: f(N, 'k-means distance'),
      partials: f(2 * nc * KD, 'k-means partial sums'),
      sums: f(2 * KD, 'k-means sums'),
    };
    return new DawnKMeans(gpu, k, { pick, best, assign, sums, update, round }, bufs, rows, cols, D, K, iters, maxChunks);
  }

  private group(pipe: GPUComputePipeline, gp: GPUBuffer, names: KmBuf[]): GPUBindGroup {
    const b: Binding[] = [];
    b[KM_BIND.gp] = gp;
    for (const n of names) b[KM_BIND[n]] = this.bufs[n];
    return this.gpu.bindGroup(pipe, b);
  }

  /** The dispatches of group gi's k-means: points W[:, j : j + perRow·D] as they stand when they run. */
  steps(j: number, perRow: number, gi: number): Dispatch[] {
    const { D, K, pipes: P } = this;
    const N = this.rows * perRow;
    const { ppt, nc } = kmeansChunks(N, K * D, this.maxChunks);
    const gp = this.gpu.uniforms(kmeansWords({ rows: this.rows, cols: this.cols, j, perRow, N, ppt, nc, gi }));
    this.uniforms.push(gp);
    const pick = { pipe: P.pick, group: this.group(P.pick, gp, ['ctl', 'W', 'C', 'best', 'chunk', 'draws']), size: [1, 1, 1] as [number, number, number] };
    const best = { pipe: P.best, group: this.group(P.best, gp, ['ctl', 'W', 'colW', 'C', 'best', 'chunk']), size: [nc, 1, 1] as [number, number, number] };
    const assign = { pipe: P.assign, group: this.group(P.assign, gp, ['ctl', 'W', 'colW', 'C', 'assign', 'pd', 'partials']), size: [nc, 1, 1] as [number, number, number] };
    const sums = { pipe: P.sums, group: this.group(P.sums, gp, ['ctl', 'partials', 'sums']), size: [K * D, 1, 1] as [number, number, number] };
    const update = { pipe: P.update, group: this.group(P.update, gp, ['ctl', 'W', 'C', 'pd', 'sums']), size: [1, 1, 1] as [number, number, number] };
    const round = { pipe: P.round, group: this.group(P.round, gp, ['ctl', 'C', 'codebooks']), size: [1, 1, 1] as [number, number, number] };
    const out: Dispatch[] = [];
    // The last seed's distances are not needed: Lloyd's first assignment computes its own.
    for (let c = 0; c < K; c++) out.push(...(c < K - 1 ? [pick, best] : [pick]));
    for (let it = 0; it < this.iters; it++) out.push(assign, sums, update);
    out.push(round);
    return out;
  }

  /** The last k-means' centres before rounding (K×D) and its assignment of the first N points (tests). */
  async centres(): Promise<Float32Array> {
    return new Float32Array(await this.gpu.read(this.bufs.C!, 4 * this.K * this.D));
  }

  async assignment(N: number): Promise<Uint32Array> {
    return new Uint32Array(await this.gpu.read(this.bufs.assign!, 4 * N));
  }

  /** Frees its buffers (not the io ones given to create). */
  release(): void {
    for (const n of ['ctl', 'C', 'best', 'chunk', 'assign', 'pd', 'partials', 'sums'] as const) this.k.drop(this.bufs[n]!);
    for (const u of this.uniforms.splice(0)) u.destroy();
  }
}
