// The two backends for tests: the CPU backend with one thread (no workers: the kernels on the test's thread)
// and with three workers (the row/column splits), and the GPU backend on the test device (SwiftShader here
// and in CI: test/unit/dawn_device.ts). Plus the drivers run on them with host arrays in and out, the shape
// the float64 twins (quant/*_ref.ts) have, so a test compares like with like.
import { after } from 'node:test';
import type { LayerConfig } from '../../../src/protocol/config';
import type { Backend } from '../../../src/engine/quant/backend';
import { CpuBackend } from '../../../src/engine/backend/cpu/cpu_backend';
import { GpuBackend } from '../../../src/engine/backend/gpu/gpu_backend';
import { gptq, type GptqOptions, type GptqResult } from '../../../src/engine/quant/gptq';
import { lopro, type LoproLayerResult } from '../../../src/engine/quant/lopro';
import { rtn, type QuantizedWeight, type RtnOptions } from '../../../src/engine/quant/rtn';
import { dequantizeCode } from '../../../src/engine/quant/quantizer';
import { testDawn } from '../dawn_device';

const opened: Backend[] = [];
after(async () => {
  for (const b of opened) await b.close();
});

const cpus = new Map<number, CpuBackend>();
/** The CPU backend with `threads` threads (1: no workers), shared by the test file. */
export function cpuBackend(threads = 1): CpuBackend {
  let b = cpus.get(threads);
  if (!b) {
    b = CpuBackend.create(threads);
    cpus.set(threads, b);
    opened.push(b);
  }
  return b;
}

let gpuB: GpuBackend | undefined;
/** The GPU backend on the test device, or null after t.skip (a failure when LOPRO_REQUIRE_DAWN=1). */
export async function gpuBackend(t: { skip: (why: string) => void }): Promise<GpuBackend | null> {
  if (gpuB) return gpuB;
  const gpu = await testDawn(t);
  if (!gpu) return null;
  gpuB = GpuBackend.create(gpu);
  opened.push(gpuB);
  return gpuB;
}

function identity(n: number): Float64Array {
  const I = new Float64Array(n * n);
  for (let i = 0; i < n; i++) I[i * n + i] = 1;
  return I;
}

/** GPTQ (quant/gptq.ts) on `backend` with host arrays, plus Q = the dequantized codes (float32, as the reference's Q). */
export async function gptqOn(
  backend: Backend,
  W: ArrayLike<number>,
  rows: number,
  cols: number,
  H: ArrayLike<number>,
  opts: GptqOptions,
): Promise<GptqResult & { Q: Float32Array }> {
  const s = backend.session();
  try {
    const r = await gptq(s, await s.upload(Float64Array.from(W), rows, cols, 'W', 'test'), await s.upload(Float64Array.from(H), cols, cols, 'H', 'test'), opts);
    const Q = new Float32Array(rows * cols);
    for (let i = 0; i < rows; i++)
      for (let j = 0; j < cols; j++) {
        const g = i * r.groups + r.gIdx[j];
        Q[i * cols + j] = dequantizeCode(r.codes[i * cols + j], r.scale[g], r.zero[g]);
      }
    return { ...r, Q };
  } finally {
    s.close();
  }
}

/** RTN (quant/rtn.ts) on `backend`, with Q as the reference computes it. */
export async function rtnOn(backend: Backend, W: ArrayLike<number>, rows: number, cols: number, opts: RtnOptions): Promise<QuantizedWeight> {
  const s = backend.session();
  try {
    const r = await rtn(s, await s.upload(Float64Array.from(W), rows, cols, 'W', 'test'), opts);
    const Q = new Float32Array(rows * cols);
    for (let i = 0; i < rows; i++)
      for (let j = 0; j < cols; j++) {
        const g = i * r.groups + r.gIdx[j];
        Q[i * cols + j] = dequantizeCode(r.codes[i * cols + j], r.scale[g], r.zero[g]);
      }
    return { ...r, Q };
  } finally {
    s.close();
  }
}

/** LoPRo (quant/lopro.ts) on `backend` with host arrays: its result with Ŵ downloaded (`reconstructed`). */
export async function loproOn(
  backend: Backend,
  W: Float32Array,
  rows: number,
  cols: number,
  H: ArrayLike<number> | null,
  actStats: ArrayLike<number> | null,
  cfg: LayerConfig,
  seed: number,
  opts: { name?: string; H32?: Float32Array } = {},
): Promise<Omit<LoproLayerResult, 'wHat'> & { reconstructed: Float32Array }> {
  const s = backend.session();
  try {
    const Wm = await s.upload(W, rows, cols, 'W', opts.name ?? 'test');
    const Hm = H ? await s.upload(Float64Array.from(H), cols, cols, 'H', opts.name ?? 'test', opts.H32) : await s.identity(cols);
    const { wHat, ...r } = await lopro(s, Wm, Hm, actStats, cfg, seed, opts.name);
    return { ...r, reconstructed: await s.download(wHat) };
  } finally {
    s.close();
  }
}

export { identity };
