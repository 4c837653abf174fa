// Which backend a run quantizes on, chosen once per run (QuantizeConfig.backend):
//   cpu  — the TypeScript kernels over worker threads;
//   gpu  — the WGSL kernels on a WebGPU adapter (an error, exit 2, when there is none);
//   auto — the GPU when a hardware adapter exists, else the CPU, with the reason in one plain line.
// The adapter is looked for in a child process first (gpu/probe.ts): a machine without a GPU sees one line.

import { availableParallelism } from 'node:os';
import type { Backend as BackendChoice } from '../../protocol/config';
import { ErrorCode } from '../../protocol/messages';
import { ProtocolError } from '../../protocol/rpc';
import type { Backend } from '../quant/backend';
import { CpuBackend } from './cpu/cpu_backend';
import { getDawnGpu } from './gpu/dawn';
import { GpuBackend } from './gpu/gpu_backend';
import { probeAdapter, type AdapterProbe } from './gpu/probe';

export interface OpenedBackend {
  backend: Backend;
  /** Why this backend (for the log), e.g. "auto: no WebGPU adapter: …". */
  why: string;
}

/** Worker threads of the CPU backend for `threads` = 0: one per core from 4 cores up, else the engine's own thread. */
export function defaultThreads(cores = availableParallelism()): number {
  return cores >= 4 ? cores : 1;
}

/**
 * Opens the backend of `choice`; `threads` = CPU worker threads (0: defaultThreads()). `probe` says whether a
 * WebGPU adapter exists (tests pass their own answer).
 */
export async function openBackend(choice: BackendChoice, threads: number, probe: AdapterProbe = probeAdapter()): Promise<OpenedBackend> {
  const cpuThreads = threads || defaultThreads();
  if (choice === 'cpu') return { backend: CpuBackend.create(cpuThreads), why: 'asked for' };
  const usable = probe.adapter && (choice === 'gpu' || !probe.fallback);
  if (!usable) {
    const reason = probe.adapter ? `the only WebGPU adapter is a CPU emulation (${probe.adapter})` : probe.reason!;
    if (choice === 'gpu') throw new ProtocolError(ErrorCode.BadConfig, `--backend gpu: ${reason}`, 'backend', 'use --backend cpu or auto');
    return { backend: CpuBackend.create(cpuThreads), why: `auto: ${reason}` };
  }
  const { gpu, reason } = await getDawnGpu();
  if (!gpu) {
    if (choice === 'gpu') throw new ProtocolError(ErrorCode.BadConfig, `--backend gpu: ${reason}`, 'backend', 'use --backend cpu or auto');
    return { backend: CpuBackend.create(cpuThreads), why: `auto: the WebGPU device failed: ${reason}` };
  }
  const note = gpu.isFallback ? '; a CPU emulation: expect it to be slower than --backend cpu' : '';
  return { backend: GpuBackend.create(gpu), why: `${choice === 'gpu' ? 'asked for' : 'auto: a WebGPU adapter'}${note}` };
}
