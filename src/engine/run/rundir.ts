// The run directory: everything a run writes, laid out so that a crash at any instant leaves
// either the previous consistent state or the next one (every file is written temp + rename).
//
//   run.json                  manifest: fingerprint, config, per-layer reports, completed blocks
//   ckpt/block-00003.safetensors   stored parts of every layer of block 3 (`<layer>::<part>`)
//   ckpt/acts-00003.f32       hidden states after block 3 = inputs of block 4 (llama runs only)
//   hessians/block-00003.safetensors  H and mean |x| (float32) of each distinct linear input (re-quantize)
//   details/block-00003.json  LayerDetails of the block's LoPRo layers (the layer view)
//   candidates/<id>.safetensors + .json   re-quantized layers waiting for layer/apply
//   native/                   the finished quantized model (appears only when the run completes)
//   scratch/                  spilled activations of the block in progress (deleted at the end)
//   run.lock                  pid of the process writing the run (one writer at a time)
//
// Order of a block commit: block parts, Hessians, activations, then run.json last: run.json is
// the commit record, so a kill before it leaves the previous block as the resume point, and the
// files written for the unfinished block are simply overwritten on resume.

import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { QuantizeConfig } from '../../protocol/config';
import type { Plan } from '../../protocol/plan';
import { ErrorCode, type LayerReport, type MemoryPlanSummary, type RunSummary } from '../../protocol/messages';
import { ProtocolError } from '../../protocol/rpc';
import { atomicWriteFile } from '../io/atomic';
import type { RunFingerprint } from './fingerprint';
import { RUN_FORMAT } from './version';

export interface RunManifest {
  format: number;
  engineVersion: string;
  /** Absolute path of the model that was quantized. */
  modelPath: string;
  kind: 'llama' | 'tensors';
  config: QuantizeConfig;
  fingerprint: RunFingerprint;
  /** Units of checkpointing: decoder blocks (llama) or tensors (bare safetensors). */
  numBlocks: number;
  completedBlocks: number;
  layers: LayerReport[];
  ep: string;
  /** The backend that quantized the layers (its label: "cpu: 2 threads", "gpu: …"); absent in runs of older engines. */
  backend?: string;
  /** Wall time summed over every session of this run (resumes included). */
  seconds: number;
  /** The engine's peak resident memory, bytes: the largest of the run's sessions. */
  peakHostBytes?: number;
  /** The memory plan of the run's last session (calibrated runs). */
  memoryPlan?: MemoryPlanSummary;
  resumed: boolean;
  complete: boolean;
  /** Calibration ctx and window count actually used (0 in data-free mode). */
  ctx: number;
  calibSamples: number;
  perplexity?: Record<string, number>;
  /** KL(float ‖ quantized) of the next-token distributions, nats per predicted position, by text. */
  kl?: Record<string, number>;
  /** Float perplexities of the original model on the same texts (when measured). */
  floatPerplexity?: Record<string, number>;
  /** A target-size run's plan (targetBpw > 0): each layer's chosen candidate of measurements.json. */
  plan?: Plan;
}

const pad5 = (b: number) => String(b).padStart(5, '0');

export class RunDir {
  constructor(readonly dir: string) {}

  get manifestFile(): string {
    return join(this.dir, 'run.json');
  }
  /** A target-size run's measurement pass (kept across fresh runs of the folder: reused when it still applies). */
  get measurementsFile(): string {
    return join(this.dir, 'measurements.json');
  }
  get nativeDir(): string {
    return join(this.dir, 'native');
  }
  get scratchDir(): string {
    return join(this.dir, 'scratch');
  }
  blockFile(b: number): string {
    return join(this.dir, 'ckpt', `block-${pad5(b)}.safetensors`);
  }
  actsFile(b: number): string {
    return join(this.dir, 'ckpt', `acts-${pad5(b)}.f32`);
  }
  hessianFile(b: number): string {
    return join(this.dir, 'hessians', `block-${pad5(b)}.safetensors`);
  }
  /** LayerDetails (downsampled, for the layer view) of every layer of block b that has them. */
  detailsFile(b: number): string {
    return join(this.dir, 'details', `block-${pad5(b)}.json`);
  }
  candidateFile(id: string, ext: 'safetensors' | 'json'): string {
    if (!/^[a-z0-9-]+$/.test(id)) throw new ProtocolError(ErrorCode.InvalidParams, `invalid candidate id "${id}"`, 'candidateId');
    return join(this.dir, 'candidates', `${id}.${ext}`);
  }

  get lockFile(): string {
    return join(this.dir, 'run.lock');
  }

  /**
   * One writer per run directory (the extension's engine and a CLI could otherwise interleave
   * checkpoints). The lock holds the owner's pid; a lock whose process is gone (a SIGKILLed run) is
   * taken over. Returns the release function.
   */
  lock(): () => void {
    if (heldLocks.has(this.dir))
      throw new ProtocolError(ErrorCode.InvalidParams, `${this.dir} is in use by another request of this engine`, this.lockFile, 'wait for that run to finish or cancel it');
    mkdirSync(this.dir, { recursive: true });
    for (let attempt = 0; attempt < 2; attempt++) {
      try {
        writeFileSync(this.lockFile, String(process.pid), { flag: 'wx' });
        heldLocks.add(this.dir);
        return () => {
          heldLocks.delete(this.dir);
          rmSync(this.lockFile, { force: true });
        };
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
        const owner = Number(readFileSync(this.lockFile, 'utf8'));
        if (Number.isInteger(owner) && owner > 0 && isAlive(owner))
          throw new ProtocolError(
            ErrorCode.InvalidParams,
            `${this.dir} is in use by another engine process (pid ${owner})`,
            this.lockFile,
            'wait for that run to finish or cancel it; a stale lock of a dead process is taken over automatically',
          );
        rmSync(this.lockFile, { force: true }); // stale: its process is gone
      }
    }
    throw new ProtocolError(ErrorCode.Io, `cannot lock ${this.dir}`, this.lockFile);
  }

  /**
   * Runs `fn` holding the run lock of an existing run folder (exports, layer re-quantize, apply): no other
   * writer works on it meanwhile. The folder is checked to be a run first, so no lock file lands elsewhere.
   */
  async withLock<T>(fn: () => Promise<T> | T): Promise<T> {
    this.readManifest();
    const unlock = this.lock();
    try {
      return await fn();
    } finally {
      unlock();
    }
  }

  ensure(): void {
    for (const d of [this.dir, join(this.dir, 'ckpt'), join(this.dir, 'hessians'), join(this.dir, 'details'), join(this.dir, 'candidates'), this.scratchDir])
      mkdirSync(d, { recursive: true });
  }

  exists(): boolean {
    return existsSync(this.manifestFile);
  }

  readManifest(): RunManifest {
    let text: string;
    try {
      text = readFileSync(this.manifestFile, 'utf8');
    } catch (e) {
      throw new ProtocolError(
        ErrorCode.Io,
        `${this.dir} is not a run directory (cannot read run.json: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`,
        this.manifestFile,
        'pass the --out folder of a `lopro quantize` run',
      );
    }
    let m: RunManifest;
    try {
      m = JSON.parse(text) as RunManifest;
    } catch (e) {
      throw new ProtocolError(
        ErrorCode.IncompatibleCheckpoint,
        `${this.manifestFile} is not valid JSON: ${(e as Error).message}`,
        this.manifestFile,
        'start the run again without --resume',
      );
    }
    if (m.format !== RUN_FORMAT)
      throw new ProtocolError(
        ErrorCode.IncompatibleCheckpoint,
        `run directory format ${m.format}, this engine reads ${RUN_FORMAT}`,
        this.manifestFile,
        'start the run again without --resume',
      );
    return m;
  }

  writeManifest(m: RunManifest): void {
    atomicWriteFile(this.manifestFile, JSON.stringify(m, null, 1) + '\n');
  }

  /** Drops checkpoint and output files of an earlier run in this folder (a fresh start). */
  resetForFreshRun(): void {
    for (const d of ['ckpt', 'hessians', 'details', 'candidates', 'scratch', 'native']) rmSync(join(this.dir, d), { recursive: true, force: true });
    rmSync(this.manifestFile, { force: true });
  }

  /**
   * A run that ended (failed or cancelled) before committing any block holds nothing worth keeping: its
   * entries go, so the folder does not look like a run. The lock stays until its holder unlocks.
   */
  discardUncommitted(): void {
    this.resetForFreshRun();
    for (const f of this.tempFiles()) rmSync(f, { recursive: true, force: true });
  }

  /** Removes activations older than block `keep` (their block is committed) and scratch files. */
  pruneActivations(keep: number): void {
    const ck = join(this.dir, 'ckpt');
    for (const f of readdirSync(ck)) {
      const m = /^acts-(\d+)\.f32$/.exec(f);
      if (m && Number(m[1]) < keep) rmSync(join(ck, f), { force: true });
    }
  }

  /**
   * Leftovers of interrupted atomic writes anywhere in the run dir: temp files and temp folders
   * (`*.tmp-<pid>-<rand>`, io/atomic.ts). A clean cancel leaves none; a resume removes a killed
   * session's.
   */
  tempFiles(): string[] {
    const out: string[] = [];
    const walk = (d: string) => {
      if (!existsSync(d)) return;
      for (const e of readdirSync(d, { withFileTypes: true })) {
        const p = join(d, e.name);
        if (/\.tmp-\d+-[0-9a-f]+$/.test(e.name)) out.push(p);
        else if (e.isDirectory()) walk(p);
      }
    };
    walk(this.dir);
    return out;
  }
}

/** Run directories locked by this process (a pid check cannot tell two requests of one engine apart). */
const heldLocks = new Set<string>();

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM'; // exists, owned by someone else
  }
}

export function summaryOf(m: RunManifest, runDir: string): RunSummary {
  let w = 0,
    bits = 0;
  for (const l of m.layers) {
    w += l.rows * l.cols;
    bits += l.bpw * l.rows * l.cols;
  }
  return {
    runDir,
    model: m.modelPath,
    config: m.config,
    layers: m.layers,
    bpw: w ? bits / w : 0,
    seconds: m.seconds,
    ep: m.ep,
    backend: m.backend,
    peakHostBytes: m.peakHostBytes,
    memoryPlan: m.memoryPlan,
    perplexity: m.perplexity,
    kl: m.kl,
    resumed: m.resumed,
  };
}
