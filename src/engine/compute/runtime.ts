// ONNX Runtime execution: EP selection with fail-over, a session cache keyed by graph identity + shapes,
// device-resident tensors (WebGPU `gpu-buffer`), and counters for host↔device traffic.
//
// EP facts (shared/guides/gpu-device.md): WebGPU outputs can stay on the GPU and be fed to any other
// WebGPU session of the process; reading them back is "not implemented" in node 1.30, so readback goes
// through an Identity session with CPU output. CUDA-EP outputs always come back to JS. The CPU EP works
// on JS memory directly, so it copies nothing.

import * as ort from 'onnxruntime-node';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { probeAdapter } from '../backend/gpu/probe';
import { ensureRuntimeDir } from '../backend/gpu/dawn';
import { engineEnv } from '../env';
import { GraphBuilder, type OnnxDtype } from './graph';

export type EpName = 'cuda' | 'webgpu' | 'cpu';
export type EpChoice = 'auto' | EpName;
export type Tensor = ort.Tensor;

/** What benchmarks report: copies through the Node binding run at only ~1–2 GB/s on the GPU EPs. */
export interface ComputeCounters {
  h2dCopies: number;
  h2dBytes: number;
  d2hCopies: number;
  d2hBytes: number;
  runs: number;
  sessionsCreated: number;
  /** Wall time spent creating sessions (graph encoding + ORT optimisation). */
  sessionCreateMs: number;
  /** Wall time inside session.run (compute + the copies it implies). */
  runMs: number;
}

export const newCounters = (): ComputeCounters => ({ h2dCopies: 0, h2dBytes: 0, d2hCopies: 0, d2hBytes: 0, runs: 0, sessionsCreated: 0, sessionCreateMs: 0, runMs: 0 });

/** The same counts per kind of graph (the session key up to its first '|' or ':<shape…>'), for "where do the copies go". */
export interface GraphCounters {
  runs: number;
  runMs: number;
  h2dBytes: number;
  d2hBytes: number;
}

export type LogFn = (level: 'info' | 'warn', message: string) => void;

export interface RuntimeOptions {
  ep?: EpChoice;
  /** CPU EP threads (default: ORT's choice = physical cores). */
  intraOpNumThreads?: number;
  /**
   * Let idle ORT worker threads spin (ORT's default, true). Off helps when the cores are shared with
   * our own TypeScript work between runs (the blocked Cholesky) or with other processes.
   */
  allowSpinning?: boolean;
  cudaDeviceId?: number;
  /** Sessions kept before the least recently used one is released. */
  maxSessions?: number;
  log?: LogFn;
}

export interface EpAttempt {
  ep: EpName;
  ok: boolean;
  reason?: string;
}

const ORDER: Record<EpChoice, EpName[]> = { auto: ['cuda', 'webgpu', 'cpu'], cuda: ['cuda', 'cpu'], webgpu: ['webgpu', 'cpu'], cpu: ['cpu'] };

/** Per-session overrides of the runtime options. */
export interface SessionTune {
  /** See RuntimeOptions.allowSpinning; callers that do TS work between short runs turn it off. */
  allowSpinning?: boolean;
}

/**
 * Where a session leaves its outputs: 'device' keeps them on the GPU when the EP can (WebGPU only);
 * a record places each named output (e.g. a loop's state on the device, its small results on the host).
 */
export type OutputPlacement = 'host' | 'device' | Readonly<Record<string, 'host' | 'device'>>;

interface CacheEntry {
  session: Promise<ort.InferenceSession>;
  placement: OutputPlacement;
}

export class ComputeRuntime {
  readonly counters: ComputeCounters = newCounters();
  /** counters split by graph kind (see kindOf). */
  readonly byGraph = new Map<string, GraphCounters>();
  private readonly kindOfSession = new WeakMap<ort.InferenceSession, string>();
  private readonly cache = new Map<string, CacheEntry>();
  private readonly maxSessions: number;
  /** Runs in flight per session, so an evicted session is never released under a running caller. */
  private readonly busy = new Map<ort.InferenceSession, number>();

  private constructor(
    /** The execution provider actually in use. */
    readonly ep: EpName,
    /** Every EP tried, in order, with the reason each failed one was skipped. */
    readonly attempts: readonly EpAttempt[],
    private readonly opts: RuntimeOptions,
  ) {
    this.maxSessions = opts.maxSessions ?? 128;
  }

  /**
   * Tries the EPs of `opts.ep` in order (auto: CUDA → WebGPU → CPU) with a tiny probe model, and says which
   * one it uses in one line. Under auto, an EP that cannot work here is skipped without being tried (trying
   * prints native errors: the CUDA provider library that is not installed, the Vulkan drivers of a machine
   * without a GPU); an EP asked for by name is always tried, and its failure is a warning.
   */
  static async create(opts: RuntimeOptions = {}): Promise<ComputeRuntime> {
    const log = opts.log ?? defaultLog;
    const choice = opts.ep ?? 'auto';
    const attempts: EpAttempt[] = [];
    const skipped = () => attempts.map((a) => `${a.ep}: ${a.reason}`).join('; ');
    for (const ep of ORDER[choice]) {
      const cannot = choice === 'auto' ? unavailable(ep) : undefined;
      if (cannot) {
        attempts.push({ ep, ok: false, reason: cannot });
        continue;
      }
      try {
        const s = await ort.InferenceSession.create(probeModel(), sessionOptions(ep, opts, 'host'));
        await s.release();
        log('info', `compute: ${ep} execution provider${attempts.length ? ` (${skipped()})` : ''}`);
        attempts.push({ ep, ok: true });
        return new ComputeRuntime(ep, attempts, opts);
      } catch (e) {
        const reason = firstLine(e);
        attempts.push({ ep, ok: false, reason });
        if (ep === choice) log('warn', `compute: the ${ep} execution provider failed (${reason}); trying the next one`);
      }
    }
    throw new Error(`no ONNX Runtime execution provider could start: ${skipped()}`);
  }

  /** True when outputs can stay on the device between sessions (WebGPU gpu-buffer). */
  get keepsDataOnDevice(): boolean {
    return this.ep === 'webgpu';
  }

  /**
   * A session for `key` (graph identity + every shape/attribute baked into the graph), built on first use.
   * `build` is only called on a miss; it returns the model's bytes, or its file's path (a model with external data
   * must be loaded from its path, beside which ORT finds the data file).
   */
  session(key: string, build: () => Uint8Array | string, placement: OutputPlacement = 'host', tune: SessionTune = {}): Promise<ort.InferenceSession> {
    const spin = tune.allowSpinning ?? this.opts.allowSpinning;
    const k = `${key}|${typeof placement === 'string' ? placement : JSON.stringify(placement)}${spin === false ? '|nospin' : ''}`;
    const hit = this.cache.get(k);
    if (hit) {
      this.cache.delete(k); // move to the back: Map order is our LRU order
      this.cache.set(k, hit);
      return hit.session;
    }
    const t0 = performance.now();
    const model = build();
    const options = sessionOptions(this.ep, { ...this.opts, allowSpinning: spin }, placement);
    // Two overloads of create (path, bytes): TypeScript picks one per branch.
    const session = (typeof model === 'string' ? ort.InferenceSession.create(model, options) : ort.InferenceSession.create(model, options)).then((s) => {
      this.counters.sessionsCreated++;
      this.counters.sessionCreateMs += performance.now() - t0;
      this.kindOfSession.set(s, kindOf(key));
      return s;
    });
    session.catch(() => this.cache.delete(k));
    this.cache.set(k, { session, placement });
    while (this.cache.size > this.maxSessions) {
      const [oldKey, old] = this.cache.entries().next().value as [string, CacheEntry];
      this.cache.delete(oldKey);
      void old.session.then((s) => this.releaseWhenIdle(s)).catch(() => undefined);
    }
    return session;
  }

  /**
   * Evicted sessions are released once no run uses them; the short grace period covers a caller that
   * already holds the session promise but has not called run() yet.
   */
  private releaseWhenIdle(s: ort.InferenceSession): void {
    const tryRelease = () => {
      if (this.busy.has(s)) setTimeout(tryRelease, 1000).unref();
      else void s.release().catch(() => undefined);
    };
    setTimeout(tryRelease, 1000).unref();
  }

  /** Runs a session on the feeds it declares (others are ignored); counts the copies implied by where the feeds and outputs live. */
  async run(session: ort.InferenceSession, allFeeds: Record<string, Tensor>): Promise<Record<string, Tensor>> {
    // Only the inputs the graph declares: pruned graphs drop the inputs they never read (GraphBuilder.toModel).
    const feeds: Record<string, Tensor> = {};
    for (const name of session.inputNames) if (name in allFeeds) feeds[name] = allFeeds[name];
    // Uploads and readbacks (identity sessions) are attributed to the caller's scope (see scoped).
    const graphKind = this.kindOfSession.get(session) ?? '?';
    const kind = graphKind === 'identity' ? `copies@${this.scopeLabel || 'other'}` : graphKind;
    let g = this.byGraph.get(kind);
    if (!g) this.byGraph.set(kind, (g = { runs: 0, runMs: 0, h2dBytes: 0, d2hBytes: 0 }));
    if (this.ep !== 'cpu') {
      for (const t of Object.values(feeds)) {
        if (t.location === 'cpu') {
          this.counters.h2dCopies++;
          this.counters.h2dBytes += byteSize(t);
          g.h2dBytes += byteSize(t);
        }
      }
    }
    const t0 = performance.now();
    this.busy.set(session, (this.busy.get(session) ?? 0) + 1);
    let out: Record<string, Tensor>;
    try {
      out = await this.serialized(() => session.run(feeds) as Promise<Record<string, Tensor>>);
    } finally {
      const left = (this.busy.get(session) ?? 1) - 1;
      if (left > 0) this.busy.set(session, left);
      else this.busy.delete(session);
    }
    this.counters.runMs += performance.now() - t0;
    this.counters.runs++;
    g.runs++;
    g.runMs += performance.now() - t0;
    if (this.ep !== 'cpu') {
      for (const t of Object.values(out)) {
        if (t.location === 'cpu') {
          this.counters.d2hCopies++;
          this.counters.d2hBytes += byteSize(t);
          g.d2hBytes += byteSize(t);
        }
      }
    }
    return out;
  }

  private scopeLabel = '';

  /**
   * Runs `fn` with `label` as the attribution of its plain uploads and readbacks in byGraph (diagnostics:
   * "copies@gptq", "copies@forwards"…). Labels of concurrent callers can mix; the totals stay exact.
   */
  async scoped<T>(label: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.scopeLabel;
    this.scopeLabel = label;
    try {
      return await fn();
    } finally {
      this.scopeLabel = prev;
    }
  }

  /** End of the queue of GPU runs (see serialized). */
  private gpuTail: Promise<void> = Promise.resolve();

  /**
   * GPU EPs: one run at a time per runtime: whether ORT's GPU EPs tolerate concurrent Run calls on one
   * device is not something we rely on. The CPU EP runs concurrently (its sessions are thread-safe).
   */
  private serialized<T>(fn: () => Promise<T>): Promise<T> {
    if (this.ep === 'cpu') return fn();
    const run = this.gpuTail.then(fn, fn);
    this.gpuTail = run.then(
      () => undefined,
      () => undefined,
    );
    return run;
  }

  /** A host tensor over `data` (no copy). */
  host(data: Float32Array, dims: readonly number[]): Tensor {
    return new ort.Tensor('float32', data, dims);
  }

  /** A host int64 tensor (Slice bounds and other index inputs). */
  hostI64(values: readonly number[], dims: readonly number[] = [values.length]): Tensor {
    return new ort.Tensor('int64', BigInt64Array.from(values.map((v) => BigInt(v))), dims);
  }

  /** Moves a host tensor to the device (WebGPU); on other EPs returns it unchanged. */
  async upload(t: Tensor): Promise<Tensor> {
    this.claimDevice(byteSize(t));
    if (!this.keepsDataOnDevice || t.location !== 'cpu') return t;
    const s = await this.session(`identity:${t.type}:${t.dims.length}`, () => identityModel(t.type as OnnxDtype, t.dims.length), 'device');
    return (await this.run(s, { x: t })).y;
  }

  /**
   * Where data is about to take device memory (an upload, or outputs a caller keeps on the device). No EP reports
   * free memory, so there is nothing to check; it is the fault-injection point for tests: in the scope
   * LOPRO_FAIL_UPLOAD_SCOPE names it fails as an out-of-memory device would (the callers' fallbacks are tested on
   * the CPU EP this way).
   */
  claimDevice(bytes: number): void {
    const failScope = engineEnv().failUploadScope;
    if (failScope && failScope === this.scopeLabel) throw new Error(`injected: no device memory for ${bytes} bytes`);
  }

  /** Host copy of a float32 tensor; device tensors are read back through an Identity session. */
  async download(t: Tensor): Promise<Float32Array> {
    if (t.location === 'cpu') return t.data as Float32Array;
    const s = await this.session(`identity:${t.type}:${t.dims.length}`, () => identityModel(t.type as OnnxDtype, t.dims.length), 'host');
    return (await this.run(s, { x: t })).y.data as Float32Array;
  }

  /** Frees device memory now (GPU tensors are not garbage collected promptly). No-op for host tensors. */
  release(...ts: (Tensor | undefined)[]): void {
    for (const t of ts) if (t && t.location === 'gpu-buffer') t.dispose();
  }

  /** Build-or-reuse + run with Float32Array in and out (outputs always on the host). */
  async runF32(key: string, build: () => Uint8Array, inputs: Record<string, [Float32Array, readonly number[]]>): Promise<Record<string, Float32Array>> {
    const s = await this.session(key, build, 'host');
    const feeds: Record<string, Tensor> = {};
    for (const [name, [data, dims]] of Object.entries(inputs)) feeds[name] = this.host(data, dims);
    const out = await this.run(s, feeds);
    const res: Record<string, Float32Array> = {};
    for (const [name, t] of Object.entries(out)) res[name] = t.data as Float32Array;
    return res;
  }

  resetCounters(): void {
    Object.assign(this.counters, newCounters());
    this.byGraph.clear();
  }

  /** The `top` graph kinds by host↔device bytes, one line each (for logs). */
  graphSummary(top = 6): string {
    const gb = (b: number) => (b / 1e9).toFixed(2);
    return [...this.byGraph]
      .sort((a, b) => b[1].h2dBytes + b[1].d2hBytes - (a[1].h2dBytes + a[1].d2hBytes))
      .slice(0, top)
      .map(
        ([k, c]) =>
          `${k}: ${c.runs} runs ${(c.runMs / 1000).toFixed(1)} s, up ${gb(c.h2dBytes)} GB, down ${gb(c.d2hBytes)} GB${k.startsWith('copies@') ? ` (${copyRate(c.h2dBytes + c.d2hBytes, c.runMs)})` : ''}`,
      )
      .join('; ');
  }

  /** Releases every cached session. */
  async dispose(): Promise<void> {
    const entries = [...this.cache.values()];
    this.cache.clear();
    await Promise.all(entries.map((e) => e.session.then((s) => s.release()).catch(() => undefined)));
  }
}

/** Bytes over milliseconds as "X.XX GB/s" ("–" when nothing was timed). */
export function copyRate(bytes: number, ms: number): string {
  return ms > 0 ? `${(bytes / 1e6 / ms).toFixed(2)} GB/s` : '– GB/s';
}

function sessionOptions(ep: EpName, opts: RuntimeOptions, placement: OutputPlacement): ort.InferenceSession.SessionOptions {
  const base: ort.InferenceSession.SessionOptions = { graphOptimizationLevel: 'all', logSeverityLevel: 3 };
  const env = engineEnv();
  // LOPRO_ORT_PROFILE=<prefix>: ORT's profiler on every session (per-node kernel times and EP placement,
  // one JSON per session, written when the session is released; bench/ort_profile_summary.ts reads them).
  if (env.ortProfile) Object.assign(base, { enableProfiling: true, profileFilePrefix: env.ortProfile });
  if (opts.allowSpinning === false) base.extra = { session: { intra_op: { allow_spinning: '0' }, inter_op: { allow_spinning: '0' } } };
  switch (ep) {
    case 'cpu': {
      // LOPRO_ORT_THREADS caps ORT's CPU threads when the caller did not (several runs sharing a machine).
      const threads = opts.intraOpNumThreads ?? env.ortThreads;
      return threads ? { ...base, executionProviders: ['cpu'], intraOpNumThreads: threads } : { ...base, executionProviders: ['cpu'] };
    }
    case 'cuda':
      return { ...base, executionProviders: [{ name: 'cuda', deviceId: opts.cudaDeviceId ?? 0 }] };
    case 'webgpu': {
      ensureRuntimeDir(); // its own Dawn's Vulkan drivers print an error per start without one
      const loc = (p: 'host' | 'device'): 'gpu-buffer' | 'cpu' => (p === 'device' ? 'gpu-buffer' : 'cpu');
      const preferredOutputLocation = typeof placement === 'string' ? loc(placement) : Object.fromEntries(Object.entries(placement).map(([k, v]) => [k, loc(v)]));
      return { ...base, executionProviders: [{ name: 'webgpu', ...webgpuOptions() }], preferredOutputLocation };
    }
  }
}

// The WebGPU EP options the Node binding passes through (others throw there). They configure ORT's one
// WebGPU context, created by the first WebGPU session of the process: later sessions cannot change them.
const WEBGPU_OPTION_NAMES = ['validationMode', 'storageBufferCacheMode', 'uniformBufferCacheMode', 'queryResolveBufferCacheMode', 'defaultBufferCacheMode'];

/** LOPRO_WEBGPU_OPTIONS="validationMode=disabled,storageBufferCacheMode=bucket" (diagnostics). */
export function webgpuOptions(spec = engineEnv().webgpuOptions): Record<string, string> {
  const out: Record<string, string> = {};
  for (const kv of spec
    .split(',')
    .map((x) => x.trim())
    .filter(Boolean)) {
    const [k, v] = kv.split('=').map((x) => x.trim());
    if (!WEBGPU_OPTION_NAMES.includes(k) || !v) throw new RangeError(`LOPRO_WEBGPU_OPTIONS: '${kv}' is not name=value with a name among ${WEBGPU_OPTION_NAMES.join(', ')}`);
    out[k] = v;
  }
  return out;
}

/** Identity over a tensor of the given rank (symbolic dims): the upload/readback path of WebGPU. */
function identityModel(dtype: OnnxDtype, rank: number): Uint8Array {
  const g = new GraphBuilder('identity');
  g.output(
    g.op('Identity', [
      g.input(
        'x',
        dtype,
        Array.from({ length: rank }, (_, i) => `d${i}`),
      ),
    ]),
    'y',
  );
  return g.toModel();
}

/** Why `ep` cannot work on this machine, found without loading it (undefined: try it). */
function unavailable(ep: EpName): string | undefined {
  if (ep === 'cuda') {
    const lib = cudaProviderLibrary();
    return lib && !existsSync(lib) ? "onnxruntime-node's CUDA provider is not installed (npm installs it unless ONNXRUNTIME_NODE_INSTALL=skip)" : undefined;
  }
  if (ep === 'webgpu') {
    const p = probeAdapter();
    return !p.adapter ? p.reason : p.fallback ? `the only WebGPU adapter is a CPU emulation (${p.adapter})` : undefined;
  }
  return undefined;
}

/** Where onnxruntime-node keeps its CUDA provider library on this platform (undefined: unknown, or no CUDA build). */
function cudaProviderLibrary(): string | undefined {
  const name = { linux: 'libonnxruntime_providers_cuda.so', win32: 'onnxruntime_providers_cuda.dll' }[process.platform as string];
  if (!name) return undefined;
  try {
    const pkg = dirname(createRequire(__filename).resolve('onnxruntime-node/package.json'));
    const dir = join(pkg, 'bin', 'napi-v6', process.platform, process.arch);
    return existsSync(dir) ? join(dir, name) : undefined;
  } catch {
    return undefined;
  }
}

function probeModel(): Uint8Array {
  const g = new GraphBuilder('probe');
  g.output(g.op('Add', [g.input('x', 'float32', [1]), g.constF32([1])]), 'y');
  return g.toModel();
}

/**
 * A session key's kind: 'llama:{…}:T512:in_out:block:accstats:mlp_act' → 'block:accstats:mlp_act',
 * 'gptq/loop|128|…' → 'gptq/loop', 'identity:float32:2' → 'identity' (uploads and readbacks).
 */
export function kindOf(key: string): string {
  if (key.startsWith('llama:')) return key.slice(key.lastIndexOf('}') + 1).replace(/^:T\d+:[a-z_]+:/, '');
  return key.split(/[|:]/)[0].replace(/(\/\d+)+$/, '');
}

const BYTES: Record<string, number> = { float32: 4, float16: 2, int64: 8, int32: 4, uint8: 1, int8: 1, bool: 1, float64: 8 };

function byteSize(t: Tensor): number {
  return t.size * (BYTES[t.type] ?? 4);
}

function firstLine(e: unknown): string {
  const msg = e instanceof Error ? e.message : String(e);
  // ORT messages start with a source path and a C++ signature; the useful part is the "Failed to ..." tail.
  const first = msg.split('\n').find((l) => l.trim().length > 0) ?? msg;
  const line = /(Failed to .*)$/.exec(first)?.[1] ?? first;
  return line.length > 300 ? `${line.slice(0, 300)}…` : line;
}

function defaultLog(level: 'info' | 'warn', message: string): void {
  if (level === 'warn') process.stderr.write(`${message}\n`);
}

let shared: Promise<ComputeRuntime> | undefined;
let sharedChoice: EpChoice | undefined;

/** One runtime per process per EP choice. */
export function getRuntime(ep: EpChoice = 'cpu'): Promise<ComputeRuntime> {
  if (!shared || sharedChoice !== ep) {
    sharedChoice = ep;
    shared = ComputeRuntime.create({ ep });
  }
  return shared;
}
