// Which engines quantize a layer in a pipeline run (issue 5): GPTQ rows split over worker threads,
// and on a GPU EP the GPTQ lazy updates, the Cholesky of H⁻¹ and the R1SVD mat-vecs on the device.
// Orchestration only; the drivers are quant/gptq_parallel*.ts, gptq_device.ts and r1svd_device.ts.
//
// CPU EP: the row-parallel driver with the lazy updates in each worker in float64 — the same codes
// as the single-threaded quant/gptq.ts (tested), so a run, its resume and the kill/resume
// byte-identity do not depend on the thread count.
// GPU EP: layers of at least DEVICE_MIN_WEIGHTS weights run GPTQ on the device — on WebGPU the whole
// column loop (quant/gptq_device_loop.ts, W resident, one run per batch of columns) for the configs it
// implements, otherwise (CUDA, whose outputs always come back to JS; clip mse; static groups) the
// hybrid path (workers for the column loops, the device for the lazy updates); the Cholesky of H⁻¹ on
// the device either way. Smaller layers stay on the workers, where the device's per-call latency would
// cost more than it saves. A device failure falls back to the workers for that layer, with a warning.
// LOPRO_GPTQ_LOOP=hybrid turns the device loop off (A/B runs).
// Before the ORT loop, on either GPU EP: the fused WGSL kernels (quant/gptq_fused.ts) on the engine's own
// Dawn device, when there is one (compute/dawn.ts) and they implement the config; LOPRO_GPTQ_LOOP=ort
// (or LOPRO_DAWN=off) skips them. A fused failure falls back to the ORT loop / hybrid path, with a warning.
// LoPRo's R1SVD likewise runs on the Dawn device first (quant/r1svd_dawn.ts; LOPRO_R1SVD=ort skips it).
// Before all of these, a LoPRo layer whose config the kernels implement runs whole on the Dawn device
// (quant/lopro_dawn.ts: W and H up once, every stage on the device); LOPRO_RESIDENT=off skips it.

import * as os from 'node:os';
import type { ComputeRuntime } from '../compute/runtime';
import type { GptqOptions, GptqResult } from '../quant/gptq';
import { getDawnGpu } from '../compute/dawn';
import { choleskyOn, createSlabUpdater, deviceLoopCholesky, fusedCholesky } from '../quant/gptq_device';
import { fusedSupports, gptqQuantizeFused } from '../quant/gptq_fused';
import { deviceLoopSupports, gptqQuantizeDeviceLoop } from '../quant/gptq_device_loop';
import { GptqPool, gptqQuantizeParallel, workerScriptPath } from '../quant/gptq_parallel';
import { kmeansOnPool, r1svdParallel } from '../quant/gptq_parallel_lopro';
import type { LowRankFactors, R1svdOptions } from '../quant/r1svd';
import { r1svdDevice } from '../quant/r1svd_device';
import { r1svdDawn } from '../quant/r1svd_dawn';
import { proxyLossesOrt } from '../quant/proxy_loss_ort';
import { loproDawnSupports, quantizeLayerLoPRoDawn, type DawnLoproResult } from '../quant/lopro_dawn';
import type { LayerConfig } from '../../protocol/config';
import { ErrorCode } from '../../protocol/messages';
import { ProtocolError } from '../../protocol/rpc';

/**
 * Layers at least this large get their report's proxy losses from ORT (O(rows·cols²): 90 s in
 * single-threaded TypeScript for a 4096² layer, measured on the device in the real pipeline).
 */
export const PROXY_LOSS_MIN_WEIGHTS = 1 << 20;

/** PROXY_LOSS_MIN_WEIGHTS, or LOPRO_PROXY_LOSS_MIN_WEIGHTS (tests: the EP paths on a tiny model). */
export function proxyLossMinWeights(): number {
  const v = process.env.LOPRO_PROXY_LOSS_MIN_WEIGHTS;
  return v !== undefined && v !== '' && Number.isFinite(Number(v)) ? Number(v) : PROXY_LOSS_MIN_WEIGHTS;
}

/** Fewer cores than this: no workers (see createLayerEngines), unless a count is asked for (LOPRO_THREADS, opts.threads). */
export const MIN_THREADS = 4;

/** Layers at least this large (rows·cols) use the device on a GPU EP: a 4096×512 layer and up. */
export const DEVICE_MIN_WEIGHTS = 1 << 21;

export interface LayerEngines {
  pool: GptqPool;
  /**
   * Quantize a group's layers concurrently (the pipeline), so that one layer's host and worker stages
   * overlap another's device stages (the pool and the device are each used by one layer at a time:
   * GptqPool.exclusive, ComputeRuntime's serialised GPU runs). Off unless LOPRO_CONCURRENT_LAYERS=1:
   * on the H100 (7B-shaped, 2 blocks, A/B in one session) it measured 83.3 vs 92.7 s of layer time in
   * one session and 96.4 vs 92.4 s in another — no reliable gain yet. Same output bytes either way.
   */
  concurrentLayers: boolean;
  /** 'workers' or 'workers+<ep>' (reports). */
  label: string;
  gptq(W: Float64Array, rows: number, cols: number, H: Float64Array, opts: GptqOptions): Promise<GptqResult>;
  /**
   * True when gptq() of a layer of rows·cols weights will run the float32 fused kernels: LoPRo's driver
   * then hands them float32 copies of W′ and H′ made on the pool (GptqOptions.f32Inputs).
   */
  float32Gptq(rows: number, cols: number, opts: Partial<GptqOptions>): Promise<boolean>;
  /**
   * [tr(ΔHΔᵀ), tr(WHWᵀ)] on the run's EP for layers of at least PROXY_LOSS_MIN_WEIGHTS weights
   * (quant/proxy_loss_ort.ts); null = use the float64 TypeScript kernel.
   */
  proxyLosses(W: Float32Array, wHat: Float32Array, H: Float64Array, rows: number, cols: number): Promise<[number, number] | null>;
  /**
   * A whole LoPRo layer on the Dawn device (quant/lopro_dawn.ts) when this is a GPU run, the layer is at
   * least DEVICE_MIN_WEIGHTS weights and the kernels implement its config; null = use the pool driver
   * (quantizeLayerLoPRoParallel with the engines below). LOPRO_RESIDENT=off turns it off (A/B runs).
   * Bad input (non-finite values) is thrown, not a fallback.
   */
  loproResident(W: Float32Array, rows: number, cols: number, H: Float64Array, absMean: Float64Array | null, cfg: LayerConfig, seed: number, name: string, H32?: Float32Array): Promise<DawnLoproResult | null>;
  /** Stage A's R1SVD for a LoPRo layer. */
  lowRank(A: Float32Array, m: number, n: number, opts: R1svdOptions): Promise<LowRankFactors>;
  close(): Promise<void>;
}

/**
 * Engines for one run, or null when there is nothing to gain or no worker script (a bundle without
 * gptq_parallel_worker.js, LOPRO_GPTQ_WORKER=none, one core): the caller then quantizes on its thread.
 */
export function createLayerEngines(
  rt: ComputeRuntime, warn: (message: string) => void,
  opts: { threads?: number; deviceMinWeights?: number } = {},
): LayerEngines | null {
  const asked = opts.threads ?? (Number(process.env.LOPRO_THREADS) || 0);
  const threads = asked || os.availableParallelism();
  const minWeights = opts.deviceMinWeights ?? DEVICE_MIN_WEIGHTS;
  // Measured on the 2-core dev machine (base, W2 lopro, 56 layers): 2 workers took 38.4 s of layer time
  // against 33.8 s on the main thread (copies and messages outweigh a second core that ORT also wants).
  if (threads < (asked ? 2 : MIN_THREADS) || !workerScriptPath()) return null;
  const pool = GptqPool.create(threads);
  const gpu = rt.ep === 'webgpu' || rt.ep === 'cuda';
  const onWorkers = (W: Float64Array, rows: number, cols: number, H: Float64Array, opts: GptqOptions) => gptqQuantizeParallel(W, rows, cols, H, { ...opts, pool });
  const fellBack = new Set<string>();
  const fallBack = (what: string, e: unknown, instead = 'the worker threads') => {
    const msg = e instanceof Error ? e.message.split('\n')[0] : String(e);
    if (!fellBack.has(what)) warn(`${what} on ${rt.ep} failed (${msg}); using ${instead} for it`);
    fellBack.add(what);
  };
  /** The Dawn device when gptq() takes the fused kernels for this layer (one decision for gptq() and float32Gptq()). */
  const fusedDevice = async (rows: number, cols: number, opts: Partial<GptqOptions>) => {
    const loop = process.env.LOPRO_GPTQ_LOOP;
    if (loop === 'ort' || loop === 'hybrid' || fellBack.has('fused GPTQ')) return null;
    const { gpu: dawn } = await getDawnGpu();
    return dawn && fusedSupports(opts, rows, cols, dawn.maxBindingBytes) ? dawn : null;
  };
  const concurrentEnv = process.env.LOPRO_CONCURRENT_LAYERS;
  return {
    pool,
    concurrentLayers: concurrentEnv === '1',
    label: gpu ? `${threads} workers + ${rt.ep}` : `${threads} workers`,
    async gptq(W, rows, cols, H, opts) {
      if (!gpu || rows * cols < minWeights || fellBack.has('GPTQ')) return onWorkers(W, rows, cols, H, opts);
      const dawn = await fusedDevice(rows, cols, opts);
      if (dawn) {
        try {
          return await rt.scoped('gptq', () => gptqQuantizeFused(dawn, W, rows, cols, H, { ...opts, ...fusedCholesky(rt) }));
        } catch (e) {
          fallBack('fused GPTQ', e, 'the ONNX Runtime paths');
        }
      }
      if (rt.ep === 'webgpu' && process.env.LOPRO_GPTQ_LOOP !== 'hybrid' && deviceLoopSupports(opts, cols) && !fellBack.has('GPTQ column loop')) {
        try {
          return await rt.scoped('gptq', () => gptqQuantizeDeviceLoop(rt, W, rows, cols, H, { ...opts, ...deviceLoopCholesky(rt) }));
        } catch (e) {
          fallBack('GPTQ column loop', e, 'the hybrid driver (workers + device updates)');
        }
      }
      try {
        return await gptqQuantizeParallel(W, rows, cols, H, {
          ...opts, pool, overlapCholesky: true,
          choleskyInverseUpperAsync: choleskyOn(rt),
          lazy: (r, c, hinv, slab) => createSlabUpdater(rt, r, c, hinv, slab),
        });
      } catch (e) {
        fallBack('GPTQ', e);
        return onWorkers(W, rows, cols, H, opts);
      }
    },
    async float32Gptq(rows, cols, opts) {
      return gpu && rows * cols >= minWeights && !fellBack.has('GPTQ') && (await fusedDevice(rows, cols, opts)) !== null;
    },
    async loproResident(W, rows, cols, H, absMean, cfg, seed, name, H32) {
      if (!gpu || rows * cols < minWeights || process.env.LOPRO_RESIDENT === 'off' || process.env.LOPRO_GPTQ_LOOP === 'ort' || fellBack.has('resident LoPRo')) return null;
      const { gpu: dawn } = await getDawnGpu();
      if (!dawn || !loproDawnSupports(cfg, rows, cols, dawn.maxBindingBytes)) return null;
      try {
        return await rt.scoped('lopro', () => quantizeLayerLoPRoDawn(dawn, W, rows, cols, H, absMean, cfg, seed, name, { H32, kmeans: (p, w, N, d, K, o) => kmeansOnPool(pool, p, w, N, d, K, o) }));
      } catch (e) {
        if (e instanceof ProtocolError && e.code === ErrorCode.NonFinite) throw e;
        fallBack('resident LoPRo', e, 'the worker-pool LoPRo driver');
        return null;
      }
    },
    async lowRank(A, m, n, opts) {
      if (!gpu || m * n < minWeights || fellBack.has('R1SVD')) return r1svdParallel(pool, A, m, n, opts);
      if (process.env.LOPRO_R1SVD !== 'ort' && !fellBack.has('Dawn R1SVD')) {
        const { gpu: dawn } = await getDawnGpu();
        if (dawn && 4 * m * n <= dawn.maxBindingBytes) {
          try {
            return await r1svdDawn(dawn, A, m, n, opts); // leaves A as it was, like the ORT path
          } catch (e) {
            fallBack('Dawn R1SVD', e, 'the ONNX Runtime R1SVD');
          }
        }
      }
      try {
        return await rt.scoped('r1svd', () => r1svdDevice(rt, A, m, n, opts)); // leaves A as it was: the pool's R1SVD can still run
      } catch (e) {
        fallBack('R1SVD', e);
        return r1svdParallel(pool, A, m, n, opts);
      }
    },
    async proxyLosses(W, wHat, H, rows, cols) {
      if (rows * cols < proxyLossMinWeights() || fellBack.has('proxy loss')) return null;
      try {
        return await rt.scoped('proxy loss', () => proxyLossesOrt(rt, W, wHat, H, rows, cols));
      } catch (e) {
        fallBack('proxy loss', e);
        return null;
      }
    },
    close: () => pool.close(),
  };
}
