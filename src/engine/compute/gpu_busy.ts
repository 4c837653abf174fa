// How busy the GPU was while a run worked: NVIDIA's own counter (NVML's utilization.gpu, the share of each sample
// period in which at least one kernel ran), read by sampling `nvidia-smi` in a child process. Neither onnxruntime-node
// nor WebGPU exposes GPU activity (WebGPU's timestamp queries cover only our own kernels, not ORT's), and this
// counter covers every process's kernels on the device: ORT's EP and the Dawn backend alike. Machines without
// nvidia-smi get no sampler, and the run says so.

import { spawn, type ChildProcess } from 'node:child_process';
import type { Socket } from 'node:net';

/** One sample: the busiest GPU's utilization (%) and its memory in use (MiB). */
export interface GpuSample {
  busy: number;
  memMiB: number;
}

/** Parses `nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader,nounits` output: one line per GPU. */
export function parseSmiLine(line: string): { busy: number; memMiB: number } | null {
  const m = /^\s*(\d+(?:\.\d+)?)\s*,\s*(\d+(?:\.\d+)?)\s*$/.exec(line);
  return m ? { busy: Number(m[1]), memMiB: Number(m[2]) } : null;
}

/** Mean busy % of the samples and their peak memory; null without samples. */
export function summarize(samples: readonly GpuSample[]): { busy: number; peakMemMiB: number; samples: number } | null {
  if (!samples.length) return null;
  let busy = 0,
    peak = 0;
  for (const s of samples) {
    busy += s.busy;
    peak = Math.max(peak, s.memMiB);
  }
  return { busy: busy / samples.length, peakMemMiB: peak, samples: samples.length };
}

export class GpuBusySampler {
  private readonly samples: GpuSample[] = [];
  private mark = 0;
  private pending = '';
  /** Lines of one sampling round: nvidia-smi prints one line per GPU, rounds back to back. */
  private round: GpuSample[] = [];

  private constructor(
    private readonly child: ChildProcess,
    private readonly gpus: number,
  ) {
    child.stdout!.setEncoding('utf8');
    child.stdout!.on('data', (chunk: string) => this.take(chunk));
  }

  /**
   * Starts sampling every `periodMs`, or resolves null when `command` (default nvidia-smi) does not run here. `gpus`:
   * how many lines make one round (the devices nvidia-smi lists; the busiest of each round counts).
   */
  static async start(periodMs = 200, command: readonly string[] = ['nvidia-smi']): Promise<GpuBusySampler | null> {
    const gpus = await countGpus(command);
    if (!gpus) return null;
    const child = spawn(command[0], [...command.slice(1), '--query-gpu=utilization.gpu,memory.used', '--format=csv,noheader,nounits', `-lms`, String(periodMs)], {
      stdio: ['ignore', 'pipe', 'ignore'],
    });
    child.on('error', () => undefined); // gone mid-run: the samples so far stand
    child.unref(); // neither the process nor its pipe keeps the engine alive
    (child.stdout as Socket).unref();
    return new GpuBusySampler(child, gpus);
  }

  private take(chunk: string): void {
    const lines = (this.pending + chunk).split('\n');
    this.pending = lines.pop() ?? '';
    for (const line of lines) {
      const s = parseSmiLine(line);
      if (!s) continue;
      this.round.push(s);
      if (this.round.length === this.gpus) {
        this.samples.push(this.round.reduce((a, b) => (b.busy > a.busy ? b : a)));
        this.round = [];
      }
    }
  }

  /** The samples since the previous lap (or the start), summarized; the next lap starts now. */
  lap(): ReturnType<typeof summarize> {
    const out = summarize(this.samples.slice(this.mark));
    this.mark = this.samples.length;
    return out;
  }

  /** Every sample of the run, summarized; stops sampling. */
  stop(): ReturnType<typeof summarize> {
    this.child.kill();
    return summarize(this.samples);
  }
}

/** The number of GPUs `command` lists (0 when it does not run: no NVIDIA driver, or not installed). */
function countGpus(command: readonly string[]): Promise<number> {
  return new Promise((resolve) => {
    let out = '';
    const c = spawn(command[0], [...command.slice(1), '--query-gpu=utilization.gpu,memory.used', '--format=csv,noheader,nounits'], { stdio: ['ignore', 'pipe', 'ignore'] });
    c.stdout.setEncoding('utf8');
    c.stdout.on('data', (d: string) => (out += d));
    c.on('error', () => resolve(0));
    c.on('close', (code) => resolve(code === 0 ? out.split('\n').filter((l) => parseSmiLine(l)).length : 0));
  });
}
