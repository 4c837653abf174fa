// A WebGPU device of the engine's own (Dawn, through the `webgpu` npm package) for the GPU backend's WGSL
// kernels. Why not ONNX Runtime's WebGPU EP for this: through ORT's Node binding every step is a graph node
// (~10–15 µs of dispatch each, bench/RESULTS.md), the binding cannot register custom kernels, and GPTQ's
// column loop is thousands of dependent steps; a WGSL kernel here does a whole lazy batch in one dispatch.
// ORT stays the engine for the model forwards, Hessians, perplexity and exports.
//
// `webgpu` ships prebuilt dawn.node binaries in its npm package (LOPRO_DAWN_NODE may name another). Tests
// run on SwiftShader (Chromium's Vulkan-on-CPU ICD, VK_ICD_FILENAMES): same WGSL, same Dawn.

import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { existsSync, mkdirSync } from 'node:fs';
import { engineEnv } from '../../env';

/** One binding of a kernel (DawnGpu.bindGroup). */
export type Binding = GPUBuffer | GPUBufferBinding | GPUBindGroupEntry[] | undefined;

/** The dawn.node module's exports (see node_modules/webgpu/index.js). */
interface DawnModule {
  create(flags: string[]): GPU;
  globals: { GPUBufferUsage: typeof GPUBufferUsage; GPUMapMode: typeof GPUMapMode; GPUShaderStage: typeof GPUShaderStage };
}

/** One dispatch of a kernel with its bind group (DawnGpu.dispatchAll runs a list of them). */
export interface Dispatch {
  pipe: GPUComputePipeline;
  group: GPUBindGroup;
  size: [number, number, number];
}

export interface DawnCounters {
  uploads: number;
  uploadBytes: number;
  readbacks: number;
  readbackBytes: number;
  submits: number;
  dispatches: number;
}

/** Bytes per staging buffer of the upload and readback rings (two of each, created on first use). */
const STAGE_BYTES = 16 * 2 ** 20;

/** One adapter + device with the adapter's largest buffer limits, and a pipeline cache keyed by WGSL. */
export class DawnGpu {
  readonly counters: DawnCounters = { uploads: 0, uploadBytes: 0, readbacks: 0, readbackBytes: 0, submits: 0, dispatches: 0 };
  private readonly pipelines = new Map<string, GPUComputePipeline>();
  private lost: string | undefined;
  /** Error scopes are a stack per device: calls that push one run one at a time, so each pops its own. */
  private scoped: Promise<unknown> = Promise.resolve();
  private copies: Promise<unknown> = Promise.resolve();
  private writeRing?: { buf: GPUBuffer; mapped: boolean }[];
  private readRing?: GPUBuffer[];

  private constructor(
    readonly device: GPUDevice,
    /** Adapter description (vendor, architecture, driver), for logs and bench tables. */
    readonly label: string,
    readonly usage: DawnModule['globals'],
    /**
     * The GPU (Dawn instance) object, held for the device's lifetime: dawn.node keeps polling the
     * instance for events, and once the object was garbage-collected that poll crashed the process
     * (null mutex in InstanceBase::ProcessEvents; seen as soon as GC ran, e.g. after a busy second).
     */
    private readonly instance: GPU,
    /** A CPU emulation (SwiftShader): correct, and far slower than the CPU backend. */
    readonly isFallback = false,
  ) {
    device.lost.then((info) => (this.lost = `${info.reason}: ${info.message}`)).catch(() => undefined);
  }

  static async create(mod: DawnModule, powerPreference: GPUPowerPreference = 'high-performance'): Promise<DawnGpu> {
    const gpu = mod.create([]);
    const adapter = await gpu.requestAdapter({ powerPreference });
    if (!adapter) throw new Error('no WebGPU adapter (Dawn found no Vulkan/Metal/D3D12 device)');
    const { maxBufferSize, maxStorageBufferBindingSize, maxComputeWorkgroupStorageSize, maxStorageBuffersPerShaderStage } = adapter.limits;
    const device = await adapter.requestDevice({
      requiredLimits: { maxBufferSize, maxStorageBufferBindingSize, maxComputeWorkgroupStorageSize, maxStorageBuffersPerShaderStage },
    });
    const i = adapter.info;
    return new DawnGpu(device, [i.vendor, i.architecture, i.description].filter(Boolean).join(' '), mod.globals, gpu, i.isFallbackAdapter);
  }

  get maxBindingBytes(): number {
    return this.device.limits.maxStorageBufferBindingSize;
  }

  /** A storage buffer holding `data` (or `bytes` zeroed bytes), usable as a copy source and destination. */
  buffer(data: ArrayBufferView | number, label?: string): GPUBuffer {
    this.check();
    const { GPUBufferUsage: U } = this.usage;
    const bytes = typeof data === 'number' ? data : data.byteLength;
    // Sizes are rounded up to 4 bytes (WebGPU's copy alignment); 16 keeps empty buffers legal.
    const size = Math.max(16, Math.ceil(bytes / 4) * 4);
    const usage = U.STORAGE | U.COPY_SRC | U.COPY_DST;
    if (typeof data === 'number') return this.device.createBuffer({ size, usage, label });
    // Small data goes straight into the mapped buffer (big data: bufferFrom, through the staging ring).
    const buf = this.device.createBuffer({ size, usage, label, mappedAtCreation: true });
    new Uint8Array(buf.getMappedRange()).set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
    buf.unmap();
    this.counters.uploads++;
    this.counters.uploadBytes += data.byteLength;
    return buf;
  }

  /**
   * A storage buffer holding `data`, or float32(data) for a Float64Array (converted chunk by chunk into
   * the staging ring: no float32 copy of the whole array on the host). Big data goes through the ring
   * (upload()): a fresh mappedAtCreation buffer's first-touch page faults cost several times the copy
   * itself, two reused staging buffers do not (bench/dawn_copy_probe.ts).
   */
  async bufferFrom(data: ArrayBufferView, label?: string): Promise<GPUBuffer> {
    const f64 = data instanceof Float64Array;
    const bytes = f64 ? data.length * 4 : data.byteLength;
    if (bytes < STAGE_BYTES && !f64) return this.buffer(data, label);
    const buf = this.buffer(bytes, label);
    try {
      await (f64 ? this.uploadF32(buf, data) : this.upload(buf, data));
    } catch (e) {
      buf.destroy();
      throw e;
    }
    return buf;
  }

  /** Host → device through the staging ring, ordered before later submits. */
  upload(buf: GPUBuffer, data: ArrayBufferView, offsetBytes = 0): Promise<void> {
    const src = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    return this.staged(src.length, offsetBytes, buf, (range, o, len) => new Uint8Array(range, 0, len).set(src.subarray(o, o + len)));
  }

  /** float32(src) → buf (Float32 layout), converted into the staging ring chunk by chunk. */
  uploadF32(buf: GPUBuffer, src: Float64Array, offsetBytes = 0): Promise<void> {
    return this.staged(src.length * 4, offsetBytes, buf, (range, o, len) => new Float32Array(range, 0, len / 4).set(src.subarray(o / 4, (o + len) / 4)));
  }

  private staged(total: number, offsetBytes: number, buf: GPUBuffer, fill: (range: ArrayBuffer, srcOffset: number, len: number) => void): Promise<void> {
    return this.copySerial(async () => {
      this.check();
      const { GPUBufferUsage: U, GPUMapMode: M } = this.usage;
      this.writeRing ??= [0, 1].map(() => ({ buf: this.device.createBuffer({ size: STAGE_BYTES, usage: U.MAP_WRITE | U.COPY_SRC, mappedAtCreation: true }), mapped: true }));
      for (let o = 0, c = 0; o < total; o += STAGE_BYTES, c++) {
        const s = this.writeRing[c % 2],
          len = Math.min(STAGE_BYTES, total - o);
        if (!s.mapped) await s.buf.mapAsync(M.WRITE); // resolves once the GPU finished its previous copy
        fill(s.buf.getMappedRange(0, STAGE_BYTES), o, len);
        s.buf.unmap();
        s.mapped = false;
        const enc = this.device.createCommandEncoder();
        enc.copyBufferToBuffer(s.buf, 0, buf, offsetBytes + o, Math.ceil(len / 4) * 4);
        this.device.queue.submit([enc.finish()]);
      }
      this.counters.uploads++;
      this.counters.uploadBytes += total;
    });
  }

  /** Host → device (queued; ordered before later submits). */
  write(buf: GPUBuffer, data: ArrayBufferView, offsetBytes = 0): void {
    const pad = data.byteLength % 4;
    if (pad === 0) this.device.queue.writeBuffer(buf, offsetBytes, data.buffer, data.byteOffset, data.byteLength);
    else {
      const tmp = new Uint8Array(data.byteLength + 4 - pad);
      tmp.set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
      this.device.queue.writeBuffer(buf, offsetBytes, tmp);
    }
    this.counters.uploads++;
    this.counters.uploadBytes += data.byteLength;
  }

  /** A uniform buffer of u32 words (kernel parameters). */
  uniforms(words: ArrayLike<number>): GPUBuffer {
    const { GPUBufferUsage: U } = this.usage;
    const data = Uint32Array.from(words);
    const buf = this.device.createBuffer({ size: Math.max(16, Math.ceil(data.byteLength / 16) * 16), usage: U.UNIFORM | U.COPY_DST });
    this.device.queue.writeBuffer(buf, 0, data);
    return buf;
  }

  /** The compute pipeline for `code` (entry point `main`), compiled once per WGSL text. */
  pipeline(code: string): Promise<GPUComputePipeline> {
    return this.serial(() => this.compile(code));
  }

  private async compile(code: string): Promise<GPUComputePipeline> {
    let p = this.pipelines.get(code);
    if (p) return p;
    this.device.pushErrorScope('validation');
    const module = this.device.createShaderModule({ code });
    const info = await module.getCompilationInfo();
    const errors = info.messages.filter((m) => m.type === 'error');
    if (errors.length) {
      await this.device.popErrorScope();
      throw new Error(`WGSL compilation failed: ${errors.map((m) => `${m.lineNum}:${m.linePos} ${m.message}`).join('; ')}`);
    }
    p = await this.device.createComputePipelineAsync({ layout: 'auto', compute: { module, entryPoint: 'main' } });
    const err = await this.device.popErrorScope();
    if (err) throw new Error(`WebGPU pipeline: ${err.message}`);
    this.pipelines.set(code, p);
    return p;
  }

  /**
   * Binding i = bindings[i]: a whole buffer, a range of one (a window of rows), or the entries of a matrix
   * bound in parts (split.ts, their own binding numbers); undefined entries are bindings the kernel does not declare.
   */
  bindGroup(p: GPUComputePipeline, bindings: Binding[]): GPUBindGroup {
    const entries: GPUBindGroupEntry[] = [];
    bindings.forEach((b, binding) => {
      if (!b) return;
      if (Array.isArray(b)) entries.push(...b);
      else entries.push({ binding, resource: 'buffer' in b ? b : { buffer: b } });
    });
    return this.device.createBindGroup({ layout: p.getBindGroupLayout(0), entries });
  }

  /** Runs the dispatches in order in one compute pass of one submit. */
  async dispatchAll(steps: readonly Dispatch[]): Promise<void> {
    if (!steps.length) return;
    await this.submit((enc) => {
      const pass = enc.beginComputePass();
      for (const st of steps) {
        pass.setPipeline(st.pipe);
        pass.setBindGroup(0, st.group);
        pass.dispatchWorkgroups(...st.size);
      }
      pass.end();
    });
    this.counters.dispatches += steps.length;
  }

  /** Encodes `record` into one command buffer and submits it; validation errors reject. */
  submit(record: (enc: GPUCommandEncoder) => void): Promise<void> {
    return this.serial(() => this.submitNow(record));
  }

  private async submitNow(record: (enc: GPUCommandEncoder) => void): Promise<void> {
    this.check();
    this.device.pushErrorScope('validation');
    this.device.pushErrorScope('out-of-memory');
    const enc = this.device.createCommandEncoder();
    record(enc);
    this.device.queue.submit([enc.finish()]);
    this.counters.submits++;
    const oom = await this.device.popErrorScope();
    const val = await this.device.popErrorScope();
    if (oom) throw new Error(`WebGPU out of memory: ${oom.message}`);
    if (val) throw new Error(`WebGPU validation: ${val.message}`);
  }

  /** Device → host: `bytes` from `buf` at `offsetBytes`, after everything submitted so far. */
  async read(buf: GPUBuffer, bytes: number, offsetBytes = 0): Promise<ArrayBuffer> {
    const out = new ArrayBuffer(bytes);
    await this.readInto(buf, new Uint8Array(out), offsetBytes);
    return out;
  }

  /**
   * Device → host into `dst` (its byteLength bytes from `buf` at `offsetBytes`), through two reused
   * MAP_READ staging buffers (one chunk copied out while the next is in flight); small reads use a
   * buffer of their own.
   */
  readInto(buf: GPUBuffer, dst: ArrayBufferView, offsetBytes = 0): Promise<void> {
    const out = new Uint8Array(dst.buffer, dst.byteOffset, dst.byteLength);
    const total = out.length;
    return this.copySerial(async () => {
      this.check();
      const { GPUBufferUsage: U, GPUMapMode: M } = this.usage;
      const small = total <= 1 << 20;
      const ring = small
        ? [this.device.createBuffer({ size: Math.max(4, Math.ceil(total / 4) * 4), usage: U.MAP_READ | U.COPY_DST })]
        : (this.readRing ??= [0, 1].map(() => this.device.createBuffer({ size: STAGE_BYTES, usage: U.MAP_READ | U.COPY_DST })));
      const chunk = small ? Math.max(4, Math.ceil(total / 4) * 4) : STAGE_BYTES;
      const starts: number[] = [];
      for (let o = 0; o < Math.max(1, total); o += chunk) starts.push(o);
      const request = (c: number) => {
        const o = starts[c],
          len = Math.ceil(Math.min(chunk, total - o) / 4) * 4 || 4;
        const enc = this.device.createCommandEncoder();
        enc.copyBufferToBuffer(buf, offsetBytes + o, ring[c % ring.length], 0, len);
        this.device.queue.submit([enc.finish()]);
        return ring[c % ring.length].mapAsync(M.READ, 0, len);
      };
      try {
        const pending: Promise<void>[] = [request(0)];
        if (starts.length > 1 && ring.length > 1) pending.push(request(1));
        for (let c = 0; c < starts.length; c++) {
          await pending[c];
          const s = ring[c % ring.length],
            o = starts[c],
            len = Math.min(chunk, total - o);
          out.set(new Uint8Array(s.getMappedRange(0, Math.ceil(len / 4) * 4 || 4), 0, len), o);
          s.unmap();
          if (c + ring.length < starts.length) pending.push(request(c + ring.length));
        }
      } finally {
        if (small) ring[0].destroy();
      }
      this.counters.readbacks++;
      this.counters.readbackBytes += total;
    });
  }

  /** Staged copies share the two rings: one at a time. */
  private copySerial(f: () => Promise<void>): Promise<void> {
    const r = this.copies.then(f, f);
    this.copies = r.catch(() => undefined);
    return r;
  }

  private serial<T>(f: () => Promise<T>): Promise<T> {
    const r = this.scoped.then(f, f);
    this.scoped = r.catch(() => undefined);
    return r;
  }

  destroy(): void {
    for (const b of [...(this.writeRing ?? []).map((s) => s.buf), ...(this.readRing ?? [])]) b.destroy();
    this.device.destroy();
    void this.instance; // read once: the field exists to keep the instance alive (see the constructor)
  }

  private check(): void {
    if (this.lost) throw new Error(`the WebGPU device was lost (${this.lost})`);
  }
}

/** Where dawn.node is: LOPRO_DAWN_NODE, else the `webgpu` package's binary for this platform. */
export function dawnNodePath(): string | null {
  const own = engineEnv().dawnNode;
  if (own) return own;
  try {
    const req = createRequire(__filename);
    const pkg = dirname(req.resolve('webgpu/package.json'));
    const arch = process.platform === 'darwin' ? 'universal' : process.arch;
    const p = join(pkg, 'dist', `${process.platform}-${arch}`, 'dawn.node');
    return existsSync(p) ? p : null;
  } catch {
    return null;
  }
}

/**
 * A private XDG_RUNTIME_DIR when the environment has none (headless servers, CI): the Vulkan drivers print
 * "XDG_RUNTIME_DIR is invalid or not set" on every start without one.
 */
export function ensureRuntimeDir(env: NodeJS.ProcessEnv = process.env): void {
  if (env.XDG_RUNTIME_DIR && existsSync(env.XDG_RUNTIME_DIR)) return;
  const dir = join(tmpdir(), `lopro-runtime-${process.getuid?.() ?? 'user'}`);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  env.XDG_RUNTIME_DIR = dir;
}

let shared: Promise<{ gpu: DawnGpu | null; reason?: string }> | undefined;

/** The process's Dawn device (any adapter, CPU emulations included), created on first use; null with the reason. */
export function getDawnGpu(): Promise<{ gpu: DawnGpu | null; reason?: string }> {
  shared ??= (async () => {
    const path = dawnNodePath();
    if (!path) return { gpu: null, reason: 'the webgpu package (dawn.node) is not installed' };
    try {
      ensureRuntimeDir();
      const req = createRequire(__filename);
      return { gpu: await DawnGpu.create(req(path) as DawnModule) };
    } catch (e) {
      return { gpu: null, reason: e instanceof Error ? e.message : String(e) };
    }
  })();
  return shared;
}

/** The process's Dawn device if one was already created (reports; never starts one). */
export async function peekDawnGpu(): Promise<DawnGpu | null> {
  return shared ? (await shared).gpu : null;
}
