// Seconds per LLaMA-2-7B-shaped layer for rtn / gptq / lopro / lopro_v on each ONNX Runtime EP, with
// the per-stage breakdown and the host↔device copy counters, next to the PyTorch GPTQ peer
// (bench/torch_gptq.py, measured on the H100: bench/data/torch_gptq_h100_2026-11-22.json).
//
//   node --import tsx bench/gpu_layers.ts [--shapes 4096x4096,11008x4096,4096x11008] [--methods rtn,gptq,lopro,lopro_v]
//        [--ep cpu,webgpu,cuda] [--engines loop|fused|fused-ortchol|resident|hybrid|device|parallel|ts] [--bits 2] [--threads N] [--tokens 2048] [--chol ep|cpu] [--r1svd ep|dawn|pool] [--pipeline 0|1] [--overlap 1|0] [--chol-leaf N]
//        [--peer torch.json] [--out DIR] [--append]
//
// Shapes are rows×cols of W (y = W·x; cols = the input width, H is cols×cols), as in torch_gptq.py.
// Layers: W ~ N(0,1)/√cols with log-normal row/column scales; H = (2/T)·XᵀX from correlated,
// heavy-tailed activations X = (0.8·F·B + 0.6·E)·s (F·B rank cols/8, E Laplace, s log-normal, cols/256
// channels ×20), seeded; the products run on the CPU EP so every EP sees the same H.
// GPTQ engines (stage C of lopro too): ts = the golden float64 TypeScript core, single thread;
// parallel = row chunks on worker_threads, lazy updates in TypeScript float64;
// device = lazy updates on the EP (W resident on WebGPU), column loop on one thread;
// hybrid = row-parallel column loops + the lazy updates on the EP for all rows at once (default);
// loop = the column loop itself on the EP, one run per batch of 128 columns (quant/gptq_device_loop.ts).
// With a pool (parallel, hybrid), lopro's own stages (R1SVD, residual, permute/rotate, dequant) run on it too, exactly.
// The Cholesky of H⁻¹ runs on the EP (blocked, src/engine/linalg) except for engine ts.
// lopro_v: with --engines resident, the whole layer on Dawn with GPTVQ's lazy updates on the device
// (quant/gptvq_dawn.ts); otherwise quant/lopro.ts as is (TypeScript, one thread).

import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { execFileSync } from 'node:child_process';
import { DEFAULT_LAYER_CONFIG, type LayerConfig } from '../src/protocol/config';
import { ComputeRuntime, type ComputeCounters, type EpName } from '../src/engine/compute/runtime';
import { GraphBuilder } from '../src/engine/compute/graph';
import { gptqQuantize, type GptqOptions, type GptqResult } from '../src/engine/quant/gptq';
import { GptqPool, gptqQuantizeParallel } from '../src/engine/quant/gptq_parallel';
import { choleskyOn, createSlabUpdater, deviceLoopCholesky, fusedCholesky, gptqQuantizeDevice } from '../src/engine/quant/gptq_device';
import { quantizeLayerLoPRoWith, type GptqEngine } from '../src/engine/quant/gptq_device_lopro';
import { gptqQuantizeDeviceLoop } from '../src/engine/quant/gptq_device_loop';
import { getDawnGpu, type DawnGpu } from '../src/engine/compute/dawn';
import { gptqQuantizeFused } from '../src/engine/quant/gptq_fused';
import { kmeansOnPool, quantizeLayerLoPRoParallel, r1svdParallel } from '../src/engine/quant/gptq_parallel_lopro';
import type { LowRankFactors, R1svdOptions } from '../src/engine/quant/r1svd';
import { r1svdDevice } from '../src/engine/quant/r1svd_device';
import { r1svdDawn } from '../src/engine/quant/r1svd_dawn';
import { quantizeLayerLoPRo } from '../src/engine/quant/lopro';
import { quantizeLayerLoPRoDawn } from '../src/engine/quant/lopro_dawn';
import { rtnQuantize } from '../src/engine/quant/rtn';
import { mulberry32 } from '../src/engine/util/random';

const args = process.argv.slice(2);
const arg = (k: string, d: string) => { const i = args.indexOf(`--${k}`); return i >= 0 ? args[i + 1] : d; };
const shapes = arg('shapes', '4096x4096,11008x4096,4096x11008').split(',').map((s) => s.split('x').map(Number) as [number, number]);
const methods = arg('methods', 'rtn,gptq,lopro').split(',');
const eps = arg('ep', 'cpu').split(',') as EpName[];
// Default: what the pipeline uses — the device column loop on WebGPU, the hybrid driver on the other EPs.
const engines = arg('engines', eps.every((e) => e === 'webgpu') ? 'loop' : 'hybrid').split(',');
const bitsList = arg('bits', '2').split(',').map(Number);
const threads = Number(arg('threads', String(os.availableParallelism())));
const tokens = Number(arg('tokens', '2048'));
const qualityRows = Number(arg('quality-rows', '256'));
const outDir = arg('out', process.env.OUT ?? path.join(process.cwd(), 'bench', 'out'));
/** Where the Cholesky of H⁻¹ runs for the non-ts engines: the EP under test, or always the CPU EP (no copies). */
const cholOn = arg('chol', 'ep') as 'ep' | 'cpu';
let cpuRt: ComputeRuntime | undefined;
/** Where lopro's R1SVD mat-vecs run with a pool: on the EP under test (A resident, r1svd_device.ts) or on the pool (r1svdParallel). */
/** R1SVD (LoPRo's stage A): the EP under test, the engine's Dawn device (r1svd_dawn.ts; the pipeline's default with a Dawn device), or the pool. */
const r1svdOn = arg('r1svd', 'ep') as 'ep' | 'dawn' | 'pool';
/**
 * hybrid: pipeline the device's lazy updates one block deep behind the workers (gptq_parallel.ts `pipeline`).
 * Off by default: each worker's slab correction costs rows·B² FMAs per block, ~2× its column loop, which is
 * more than the device round trip it hides at B = 128 (measured on the 2-core CPU EP: 3.7 s vs 1.4 s loop).
 */
const pipelineOn = arg('pipeline', '0') !== '0';
/** parallel/hybrid: start the workers' prep (their W and H copies) while the Cholesky runs (gptq_parallel.ts `overlapCholesky`). */
const overlapOn = arg('overlap', '1') !== '0';
/** Leaf size of the blocked ORT Cholesky (default: linalg's, 256 on WebGPU): try 384/512 for fewer device round trips. */
const cholLeaf = args.includes('--chol-leaf') ? Number(arg('chol-leaf', '0')) : undefined;
const peerFile = arg('peer', path.join(process.cwd(), 'bench', 'data', 'torch_gptq_h100_2026-11-22.json'));
const now = () => performance.now() / 1000;
const log = (s: string) => process.stdout.write(`${s}\n`);

// ── seeded synthetic data ──
const rng = mulberry32;
function normals(n: number, u: () => number, scale = 1): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i += 2) {
    const r = Math.sqrt(-2 * Math.log(u() || 1e-12)) * scale, th = 2 * Math.PI * u();
    out[i] = r * Math.cos(th);
    if (i + 1 < n) out[i + 1] = r * Math.sin(th);
  }
  return out;
}

function synthWeight(rows: number, cols: number, seed: number): Float32Array {
  const u = rng(seed);
  const W = normals(rows * cols, u, 1 / Math.sqrt(cols));
  const rs = normals(rows, u, 0.3).map(Math.exp), cs = normals(cols, u, 0.3).map(Math.exp);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) W[r * cols + c] *= rs[r] * cs[c];
  return W;
}

/** H = (2/T)·XᵀX and mean|x| per column, X = (0.8·F·B + 0.6·E)·s built and reduced on the CPU EP. */
async function synthHessian(cpu: ComputeRuntime, cols: number, T: number, seed: number): Promise<{ H: Float64Array; absMean: Float64Array }> {
  const u = rng(seed);
  const k = Math.max(8, Math.floor(cols / 8));
  const F = normals(T * k, u), B = normals(k * cols, u, 1 / Math.sqrt(k));
  const E = new Float32Array(T * cols);
  for (let i = 0; i < E.length; i++) { const v = -Math.log(u() || 1e-12) / Math.SQRT2; E[i] = u() < 0.5 ? -v : v; } // Laplace, unit variance
  const s = normals(cols, u, 0.5).map(Math.exp);
  for (let h = 0; h < Math.max(1, cols >> 8); h++) s[Math.floor(u() * cols)] *= 20;
  const build = () => {
    const g = new GraphBuilder('synth_hessian');
    const f = g.input('f', 'float32', ['T', 'K']), b = g.input('b', 'float32', ['K', 'C']), e = g.input('e', 'float32', ['T', 'C']), sc = g.input('s', 'float32', ['C']);
    const x = g.op('Mul', [g.op('Add', [g.op('Mul', [g.op('MatMul', [f, b]), g.constF32([0.8])]), g.op('Mul', [e, g.constF32([0.6])])]), sc]);
    g.output(g.op('Mul', [g.op('MatMul', [g.op('Transpose', [x], { perm: [1, 0] }), x]), g.constF32([2 / T])]), 'h');
    g.output(g.op('ReduceMean', [g.op('Abs', [x])], { axes: [0], keepdims: 0 }), 'absmean');
    return g.toModel();
  };
  const r = await cpu.runF32('bench/synth_hessian', build, { f: [F, [T, k]], b: [B, [k, cols]], e: [E, [T, cols]], s: [s, [cols]] });
  const H = Float64Array.from(r.h);
  for (let i = 0; i < cols; i++) for (let j = i + 1; j < cols; j++) H[j * cols + i] = H[i * cols + j]; // exact symmetry
  return { H, absMean: Float64Array.from(r.absmean) };
}

/** tr(ΔHΔᵀ) over the first `n` rows, on the CPU EP (the TS loop is O(n·cols²)). */
async function proxyLossRows(cpu: ComputeRuntime, W: Float32Array, Q: ArrayLike<number>, H: Float64Array, n: number, cols: number): Promise<number> {
  const D = new Float32Array(n * cols);
  for (let i = 0; i < D.length; i++) D[i] = W[i] - Q[i];
  const build = () => {
    const g = new GraphBuilder('proxy_loss');
    const d = g.input('d', 'float32', ['R', 'C']), h = g.input('h', 'float32', ['C', 'C']);
    g.output(g.op('ReduceSum', [g.op('Mul', [g.op('MatMul', [d, h]), d])], { keepdims: 0 }), 'l');
    return g.toModel();
  };
  return (await cpu.runF32('bench/proxy_loss', build, { d: [D, [n, cols]], h: [Float32Array.from(H), [cols, cols]] })).l[0];
}

// ── engines ──
/** R1SVD with A resident on the EP (r1svd_device.ts); if the EP refuses it, the pool's R1SVD (A is left unchanged). */
function deviceLowRank(rt: ComputeRuntime, pool: GptqPool) {
  return async (A: Float32Array, m: number, n: number, o: R1svdOptions): Promise<LowRankFactors> => {
    try {
      if (r1svdOn === 'dawn') {
        if (!dawnGpu) throw new Error('no Dawn device');
        return await r1svdDawn(dawnGpu, A, m, n, o);
      }
      return await r1svdDevice(rt, A, m, n, o);
    } catch (e) {
      log(`r1svd on ${rt.ep} FAILED (${e instanceof Error ? e.message.split('\n')[0] : String(e)}); using the worker pool's R1SVD`);
      return r1svdParallel(pool, A, m, n, o);
    }
  };
}

let dawnGpu: DawnGpu | undefined;

function makeEngine(name: string, rt: ComputeRuntime, pool: GptqPool | undefined): GptqEngine {
  const crt = cholOn === 'cpu' && cpuRt ? cpuRt : rt;
  switch (name) {
    case 'ts': return async (W, r, c, H, o) => gptqQuantize(W, r, c, H, o);
    case 'parallel': return (W, r, c, H, o) => gptqQuantizeParallel(W, r, c, H, { ...o, pool, choleskyInverseUpperAsync: choleskyOn(crt, undefined, cholLeaf), overlapCholesky: overlapOn });
    case 'device': return (W, r, c, H, o) => gptqQuantizeDevice(W, r, c, H, { ...o, rt, choleskyInverseUpperAsync: choleskyOn(crt, undefined, cholLeaf) });
    case 'hybrid': return (W, r, c, H, o) => gptqQuantizeParallel(W, r, c, H, { ...o, pool, choleskyInverseUpperAsync: choleskyOn(crt, undefined, cholLeaf), lazy: (rr, cc, hinv, s) => createSlabUpdater(rt, rr, cc, hinv, s), pipeline: pipelineOn, overlapCholesky: overlapOn });
    // loop = the whole column loop on the EP, one run per batch (quant/gptq_device_loop.ts; the pipeline's WebGPU default)
    case 'loop': return (W, r, c, H, o) => gptqQuantizeDeviceLoop(rt, W, r, c, H, { ...o, ...(crt === rt ? deviceLoopCholesky(rt, cholLeaf) : { choleskyInverseUpperAsync: choleskyOn(crt, undefined, cholLeaf) }) });
    // fused = the column loop as WGSL kernels on the engine's own Dawn device (quant/gptq_fused.ts; the pipeline's GPU default where
    // Dawn has an adapter), Hinv from the Dawn Cholesky; fused-ortchol = the same kernels fed by ONNX Runtime's Cholesky (A/B)
    case 'fused':
    case 'resident': // GPTQ as 'fused'; LoPRo whole on the Dawn device (quant/lopro_dawn.ts), see the lopro branch
    case 'fused-ortchol': return (W, r, c, H, o) => {
      if (!dawnGpu) throw new Error('no Dawn device for the fused engine');
      const hooks = name !== 'fused-ortchol' ? { hinvFrom: 'dawn' as const } : crt === rt ? fusedCholesky(rt, cholLeaf, 'ort') : { hinvFrom: 'hooks' as const, choleskyInverseUpperAsync: choleskyOn(crt, undefined, cholLeaf) };
      return gptqQuantizeFused(dawnGpu, W, r, c, H, { ...o, ...hooks });
    };
    default: throw new Error(`unknown engine ${name} (ts, parallel, device, hybrid, loop, fused, fused-ortchol, resident)`);
  }
}

interface Row {
  ep: string; engine: string; shape: string; method: string; bits: number;
  seconds: number; stages: Record<string, number>; copies: Partial<ComputeCounters>;
  proxyLoss?: number; relToRtn?: number; peerSeconds?: number; ratio?: number; note?: string;
}

function counterDelta(a: ComputeCounters, b: ComputeCounters): Partial<ComputeCounters> {
  const out: Partial<ComputeCounters> = {};
  for (const k of Object.keys(a) as (keyof ComputeCounters)[]) out[k] = Math.round((b[k] - a[k]) * 1000) / 1000;
  return out;
}

function gptqStages(r: GptqResult): Record<string, number> {
  const s: Record<string, number> = { prep: r.seconds.prep, cholesky: r.seconds.cholesky, columnLoop: r.seconds.columnLoop, lazy: r.seconds.lazyUpdate };
  const f = (r as GptqResult & { fused?: { upload: number; kernels: number; unpack: number } }).fused;
  if (f) Object.assign(s, { fusedUpload: f.upload, fusedKernels: f.kernels, fusedUnpack: f.unpack });
  const p = (r as GptqResult & { parallel?: { threads: number; seconds: { workers: number; merge: number; workerPrep?: number; workerWait?: number } } }).parallel;
  if (p) {
    s.workersWall = p.seconds.workers; s.merge = p.seconds.merge; s.threads = p.threads;
    // Slowest worker's own prep (H copy…) and its time waiting in the lazy hook (device round trip + messages):
    // workerWait − lazy ≈ the per-block synchronisation cost beyond the device work itself.
    if (p.seconds.workerPrep !== undefined) s.workerPrep = p.seconds.workerPrep;
    if (p.seconds.workerWait !== undefined) s.workerWait = p.seconds.workerWait;
  }
  return s;
}

async function main() {
  fs.mkdirSync(outDir, { recursive: true });
  const peer: { shape: string; bits: number; seconds_median: number }[] = fs.existsSync(peerFile) ? JSON.parse(fs.readFileSync(peerFile, 'utf8')) : [];
  const cpu = await ComputeRuntime.create({ ep: 'cpu' });
  cpuRt = cpu;
  const needPool = engines.some((e) => e === 'parallel' || e === 'hybrid' || e === 'loop' || e.startsWith('fused') || e === 'resident'); // loop, fused: lopro's other stages on the pool
  if (engines.some((e) => e.startsWith('fused') || e === 'resident') || r1svdOn === 'dawn') {
    const d = await getDawnGpu();
    dawnGpu = d.gpu ?? undefined;
    log(d.gpu ? `Dawn device for the fused engine: ${d.gpu.label} (largest binding ${(d.gpu.maxBindingBytes / 2 ** 20).toFixed(0)} MiB)` : `no Dawn device (${d.reason}): the fused engine will fail`);
  }
  const pool = needPool ? GptqPool.create(threads) : undefined;
  log(`gpu_layers: ${os.cpus().length}× ${os.cpus()[0]?.model}, ${threads} worker threads, load ${os.loadavg().map((x) => x.toFixed(2)).join(' ')}; shapes ${shapes.map((s) => s.join('x')).join(',')}; methods ${methods}; EPs ${eps}; engines ${engines}; bits ${bitsList}`);
  const rows: Row[] = [];
  const data = new Map<string, { W: Float32Array; H: Float64Array; absMean: Float64Array }>();
  const runtimes: { ep: EpName; rt: ComputeRuntime }[] = [];
  for (const ep of eps) {
    const t = now();
    const rt = ep === 'cpu' ? cpu : await ComputeRuntime.create({ ep });
    if (rt.ep !== ep) { log(`EP ${ep} unavailable (${rt.attempts.map((a) => `${a.ep}: ${a.reason ?? 'ok'}`).join('; ')}): skipped`); continue; }
    log(`EP ${ep} ready in ${(now() - t).toFixed(2)} s`);
    runtimes.push({ ep, rt });
  }
  // Warm-up per EP and engine: sessions, Dawn/CUDA start-up, worker JIT (not timed in the table).
  for (const { rt } of runtimes) for (const e of engines) {
    const t = now();
    const c = 640, W = synthWeight(64, c, 7), { H } = await synthHessian(cpu, c, 1024, 8);
    try {
      await makeEngine(e, rt, pool)(Float64Array.from(W), 64, c, H, { bits: 2, groupSize: 128 });
      if (pool && methods.includes('lopro') && r1svdOn !== 'pool') await deviceLowRank(rt, pool)(Float32Array.from(W), 64, c, { rank: 2, powerIters: 1, seed: 1 });
      if (e === 'resident' && methods.includes('lopro')) await quantizeLayerLoPRoDawn(dawnGpu!, W, 64, c, H, null, { ...DEFAULT_LAYER_CONFIG, bits: 2 }, 1, 'warm-up');
      log(`warm-up ${rt.ep}/${e}: ${(now() - t).toFixed(2)} s`);
    } catch (err) {
      log(`warm-up ${rt.ep}/${e} FAILED: ${err instanceof Error ? err.message.split('\n')[0] : String(err)}`);
    }
  }
  for (const [si, [R, C]] of shapes.entries()) {
    const shape = `${R}x${C}`;
    let t = now();
    if (!data.has(shape)) {
      const W = synthWeight(R, C, 1000 + si);
      const { H, absMean } = await synthHessian(cpu, C, tokens, 2000 + si);
      data.set(shape, { W, H, absMean });
      log(`${shape}: synthetic W and H (${tokens} tokens, CPU EP) in ${(now() - t).toFixed(1)} s`);
    }
    const { W, H, absMean } = data.get(shape)!;
    const qn = Math.min(R, qualityRows);
    for (const bits of bitsList) {
      const rtnLoss = await proxyLossRows(cpu, W, rtnQuantize(W.subarray(0, qn * C), qn, C, { bits, groupSize: 128, sym: false }).Q, H, qn, C);
      const peerS = peer.find((p) => p.shape === shape && p.bits === bits)?.seconds_median;
      for (const { ep, rt } of runtimes) for (const engine of engines) for (const method of methods) {
        if (method === 'rtn' && engine !== engines[0]) continue; // RTN has no engine
        if (method === 'lopro_v' && engine !== 'resident' && engine !== engines[0]) continue;
        const c0 = { ...rt.counters };
        const cfg: LayerConfig = { ...DEFAULT_LAYER_CONFIG, method: method === 'lopro_v' ? 'lopro_v' : 'lopro', bits };
        let Q: ArrayLike<number>, stages: Record<string, number> = {}, note: string | undefined;
        t = now();
        try {
        if (method === 'rtn') {
          Q = rtnQuantize(W, R, C, { bits, groupSize: 128, sym: false }).Q;
          note = 'TypeScript, one thread';
        } else if (method === 'gptq') {
          const o: GptqOptions = { bits, groupSize: 128, name: shape };
          const r = await makeEngine(engine, rt, pool)(Float64Array.from(W), R, C, H, o);
          Q = r.Q;
          stages = gptqStages(r);
        } else if (method === 'lopro') {
          // With a worker pool, LoPRo's own stages (R1SVD, residual, rotation, dequant) run on it too.
          const eng = makeEngine(engine, rt, pool);
          const r = engine === 'resident'
            ? await quantizeLayerLoPRoDawn(dawnGpu!, W, R, C, H, absMean, cfg, 1, shape)
            : pool && engine !== 'ts' && engine !== 'device'
            ? await quantizeLayerLoPRoParallel(pool, eng, W, R, C, H, absMean, cfg, 1, shape, r1svdOn !== 'pool' ? deviceLowRank(rt, pool) : undefined, { float32Engine: engine.startsWith('fused') })
            : await quantizeLayerLoPRoWith(eng, W, R, C, H, absMean, cfg, 1, shape);
          Q = r.reconstructed;
          stages = { ...r.seconds };
          for (const [k, v] of Object.entries(gptqStages(r.gptq))) stages[`gptq.${k}`] = v;
        } else if (method === 'lopro_v' && engine === 'resident') {
          const r = await quantizeLayerLoPRoDawn(dawnGpu!, W, R, C, H, absMean, cfg, 1, shape, { kmeans: pool ? (p, w, N, d, K, o) => kmeansOnPool(pool, p, w, N, d, K, o) : undefined });
          Q = r.reconstructed;
          stages = { ...r.seconds, 'gptvq.cholesky': r.gptq.seconds.cholesky, 'gptvq.loop': r.gptq.seconds.columnLoop };
          note = `GPTVQ: lazy updates on Dawn, codeword search on the host, k-means ${pool ? `on ${threads} workers` : 'on the main thread'}`;
        } else if (method === 'lopro_v') {
          const r = quantizeLayerLoPRo(W, R, C, H, absMean, cfg, 1, { baselines: false, name: shape });
          Q = r.reconstructed;
          stages = { ...r.report.seconds };
          note = 'GPTVQ: TypeScript, one thread (no device path)';
        } else throw new Error(`unknown method ${method}`);
        } catch (e) {
          // One failing EP/engine/method (e.g. a device limit) must not lose the rest of the run.
          const msg = e instanceof Error ? e.message.split('\n')[0] : String(e);
          log(`${ep} ${engine} ${shape} ${method} W${bits}: FAILED after ${(now() - t).toFixed(2)} s: ${msg}`);
          rows.push({ ep, engine, shape, method, bits, seconds: NaN, stages: {}, copies: counterDelta(c0, rt.counters), note: `failed: ${msg.slice(0, 300)}` });
          continue;
        }
        const seconds = now() - t;
        const loss = await proxyLossRows(cpu, W, Q, H, qn, C);
        const row: Row = {
          ep, engine: method === 'rtn' || (method === 'lopro_v' && engine !== 'resident') ? '-' : engine, shape, method, bits, seconds,
          stages: Object.fromEntries(Object.entries(stages).map(([k, v]) => [k, Math.round(v * 1000) / 1000])),
          copies: counterDelta(c0, rt.counters), proxyLoss: loss, relToRtn: loss / rtnLoss,
          peerSeconds: peerS, ratio: peerS ? seconds / peerS : undefined, note,
        };
        rows.push(row);
        const cp = row.copies;
        log(`${ep} ${row.engine} ${shape} ${method} W${bits}: ${seconds.toFixed(2)} s${peerS ? ` (${row.ratio!.toFixed(2)}× torch ${peerS.toFixed(2)} s)` : ''}, loss/RTN ${row.relToRtn!.toFixed(3)}; ` +
          `${Object.entries(row.stages).map(([k, v]) => `${k} ${v.toFixed(2)}`).join(', ')}; h2d ${cp.h2dCopies}×/${((cp.h2dBytes ?? 0) / 1e6).toFixed(0)} MB, d2h ${cp.d2hCopies}×/${((cp.d2hBytes ?? 0) / 1e6).toFixed(0)} MB, runs ${cp.runs} (${((cp.runMs ?? 0) / 1000).toFixed(2)} s), sessions +${cp.sessionsCreated} (${((cp.sessionCreateMs ?? 0) / 1000).toFixed(2)} s)`);
      }
    }
  }
  await pool?.close();
  const table = [
    '| EP | engine | shape | method | bits | s/layer | torch H100 s | ratio | loss/RTN | stages (s) | h2d MB | d2h MB | sessions (s) |',
    '|---|---|---|---|---:|---:|---:|---:|---:|---|---:|---:|---:|',
    ...rows.map((r) => `| ${r.ep} | ${r.engine} | ${r.shape} | ${r.method} | ${r.bits} | ${Number.isNaN(r.seconds) ? (r.note ?? 'failed') : r.seconds.toFixed(2)} | ${r.peerSeconds?.toFixed(2) ?? '-'} | ${r.ratio?.toFixed(2) ?? '-'} | ${r.relToRtn?.toFixed(3)} | ${Object.entries(r.stages).map(([k, v]) => `${k} ${v.toFixed(2)}`).join(', ')} | ${((r.copies.h2dBytes ?? 0) / 1e6).toFixed(0)} | ${((r.copies.d2hBytes ?? 0) / 1e6).toFixed(0)} | ${r.copies.sessionsCreated} (${((r.copies.sessionCreateMs ?? 0) / 1000).toFixed(2)}) |`),
  ].join('\n');
  log(`\n${table}\n`);
  const meta = { date: new Date().toISOString(), host: os.hostname(), cpus: `${os.cpus().length}× ${os.cpus()[0]?.model}`, node: process.version, threads, tokens, qualityRows, args, attempts: runtimes.map((r) => ({ ep: r.ep, attempts: r.rt.attempts })) };
  const file = path.join(outDir, `gpu_layers_${eps.join('-')}_${Date.now()}.json`);
  fs.writeFileSync(file, JSON.stringify({ meta, rows }, null, 1));
  log(`wrote ${file}`);
  if (args.includes('--append')) {
    const entry = [
      '', `## gpu_layers — ${meta.date.replace(/\.\d+Z$/, 'Z')}`, '',
      `Machine: ${meta.host} (${meta.cpus}, ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB), EPs: ${eps.join(', ')}, Node ${process.version}, ${threads} worker threads, load after ${os.loadavg().map((x) => x.toFixed(2)).join(' ')}.`,
      `Command: \`node --import tsx bench/gpu_layers.ts ${args.join(' ')}\`. Synthetic layers and Hessians (${tokens} tokens), group 128 asym, damp 0.01, B 128; lopro = spec defaults (rank 16, b_I = b_H = 128). Loss/RTN = tr(ΔHΔᵀ) over the first ${qualityRows} rows. Ratio = s/layer ÷ PyTorch fasterquant on the H100 (not this machine when EP = cpu here).`,
      '', table, '',
    ].join('\n');
    execFileSync('flock', ['/tmp/lopro-results.lock', 'sh', '-c', 'cat >> "$1"', 'sh', path.join(process.cwd(), 'bench', 'RESULTS.md')], { input: entry });
    log('appended to bench/RESULTS.md');
  }
  await cpu.dispose();
  for (const { rt } of runtimes) if (rt !== cpu) await rt.dispose();
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
