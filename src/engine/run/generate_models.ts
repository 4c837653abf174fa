// The `generate` request of the engine process ("Try it"): its parameters checked at the engine's entry, and
// the models it keeps open, so that a second prompt to the same folder reuses the ONNX session instead of
// building the graph again (seconds on a 7B model, where a short prompt takes a fraction of that).
// A model is keyed by its resolved path, the EP and a stamp of the folder's files: a run changed by
// "Apply to run" (native/ rewritten) is opened afresh. Each model has its own ComputeRuntime: the shared one
// (getRuntime) keeps an LRU of sessions that a quantization run's many graphs would push the generation
// session out of, releasing it while a generation still holds it.

import { existsSync, readdirSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { EXECUTION_PROVIDERS, type ExecutionProviderName } from '../../protocol/config';
import { ErrorCode, generateBoundProblem, type GenerateParams, type GenerateResultData } from '../../protocol/messages';
import { ProtocolError } from '../../protocol/rpc';
import { ComputeRuntime } from '../compute/runtime';
import { generate, openGenerationModel, type GenerationModel } from './generate';

/** One Try it panel holds two models (float and quantized); this leaves room for a second panel's pair. */
const MAX_OPEN = 4;

interface Entry {
  dir: string;
  ep: ExecutionProviderName;
  stamp: string;
  model: Promise<GenerationModel>;
  /** Generations running on it: an evicted model is released only when none is. */
  users: number;
  evicted: boolean;
}

/** Size and mtime of the files a model is read from (the folder's own and its native/'s). */
function stamp(dir: string): string {
  const parts: string[] = [];
  for (const d of [dir, join(dir, 'native')]) {
    if (!existsSync(d) || !statSync(d).isDirectory()) continue;
    for (const f of readdirSync(d).sort()) {
      if (!/\.(json|safetensors|onnx|data)$/.test(f)) continue;
      const st = statSync(join(d, f));
      if (st.isFile()) parts.push(`${d === dir ? '' : 'native/'}${f}:${st.size}:${st.mtimeMs}`);
    }
  }
  return parts.join(',');
}

/** Rejects with E_CANCELLED when `signal` aborts first; `p` itself goes on (an open model stays cached). */
function unlessAborted<T>(p: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (!signal) return p;
  const cancelled = () => new ProtocolError(ErrorCode.Cancelled, 'generation cancelled');
  if (signal.aborted) return Promise.reject(cancelled());
  return new Promise<T>((res, rej) => {
    const onAbort = () => rej(cancelled());
    signal.addEventListener('abort', onAbort, { once: true });
    p.then(res, rej).finally(() => signal.removeEventListener('abort', onAbort));
  });
}

export class GenerationModels {
  /** Least recently used first: a use moves its entry to the back. */
  private readonly entries: Entry[] = [];

  /** `log` gets one line per model opened (the output channel shows when a prompt had to build a graph). */
  constructor(private readonly log: (message: string) => void = () => {}) {}

  /** How many models are open (or opening). */
  get size(): number {
    return this.entries.length;
  }

  /** Runs `work` on the model of `path`, opening it on first use. */
  async use<T>(path: string, ep: ExecutionProviderName, signal: AbortSignal | undefined, work: (m: GenerationModel) => Promise<T>): Promise<T> {
    const dir = resolve(path);
    const now = stamp(dir);
    let e = this.entries.find((x) => x.dir === dir && x.ep === ep);
    if (e && e.stamp !== now) {
      this.evict(e);
      e = undefined;
    }
    if (!e) {
      const t0 = Date.now();
      const model = ComputeRuntime.create({ ep })
        .then((rt) => openGenerationModel(dir, rt))
        .then((m) => {
          this.log(`generate: opened ${m.source} model ${m.dir} on EP ${m.rt.ep} in ${Date.now() - t0} ms`);
          return m;
        });
      const entry: Entry = { dir, ep, stamp: now, users: 0, evicted: false, model };
      // A folder that cannot be opened is not remembered: the next prompt tries again (after a fix).
      entry.model.catch(() => this.evict(entry));
      e = entry;
    } else this.entries.splice(this.entries.indexOf(e), 1);
    this.entries.push(e);
    while (this.entries.length > MAX_OPEN) this.evict(this.entries[0]);
    e.users++;
    try {
      return await work(await unlessAborted(e.model, signal));
    } finally {
      e.users--;
      this.releaseIfIdle(e);
    }
  }

  /** Forgets the models of these paths (released once no generation runs on them); returns how many. */
  release(paths: string[]): number {
    const dirs = new Set(paths.map((p) => resolve(p)));
    const gone = this.entries.filter((e) => dirs.has(e.dir));
    gone.forEach((e) => this.evict(e));
    return gone.length;
  }

  private evict(e: Entry): void {
    const i = this.entries.indexOf(e);
    if (i >= 0) this.entries.splice(i, 1);
    e.evicted = true;
    this.releaseIfIdle(e);
  }

  private releaseIfIdle(e: Entry): void {
    if (!e.evicted || e.users > 0) return;
    e.model.then((m) => m.session.release()).catch(() => undefined);
  }
}

/** The request's parameters as the engine accepts them (the host is trusted, other clients are not). */
export function checkGenerateParams(p: GenerateParams): void {
  const bad = (where: string, message: string) => new ProtocolError(ErrorCode.InvalidParams, message, where);
  if (typeof p.path !== 'string' || !p.path) throw bad('path', 'generate needs a path: a run, ONNX export, native or model folder');
  if (typeof p.prompt !== 'string') throw bad('prompt', 'the prompt must be text');
  for (const key of ['maxTokens', 'temperature', 'topP'] as const) {
    const problem = generateBoundProblem(key, p[key]);
    if (problem) throw bad(key, `${key} must be ${problem}, got ${p[key]}`);
  }
  if (!Number.isSafeInteger(p.seed)) throw bad('seed', `seed must be an integer, got ${p.seed}`);
  if (p.ep !== undefined && !EXECUTION_PROVIDERS.includes(p.ep)) throw bad('ep', `ep must be one of ${EXECUTION_PROVIDERS.join(', ')}, got ${p.ep}`);
}

/** Serves one `generate` request: each new piece of text to `onText`, the result with what ran it. */
export async function serveGenerate(
  models: GenerationModels,
  p: GenerateParams,
  signal: AbortSignal,
  onText: (delta: string, tokens: number) => void,
): Promise<GenerateResultData> {
  checkGenerateParams(p);
  return models.use(p.path, p.ep ?? 'auto', signal, async (m) => {
    const r = await generate(m, p.prompt, { maxTokens: p.maxTokens, sampling: { temperature: p.temperature, topP: p.topP }, seed: p.seed, signal, onText });
    return { source: m.source, ...r };
  });
}
