// Every environment variable the engine reads, read here and nowhere else. Settings a user may want are
// QuantizeConfig keys (CLI flags, VS Code settings); what is left are platform paths, the host↔engine
// handshake and diagnostics. The README lists them.

export interface EngineEnv {
  /** Set by the extension host when it forks the engine: speak the protocol over IPC instead of the CLI. */
  engineIpc: boolean;
  /** Where tokenizations and the demo's float perplexities are cached (default: <tmp>/lopro-cache). */
  cacheDir?: string;
  /** A dawn.node outside node_modules (a GPU machine with its own build). */
  dawnNode?: string;
  /** Print stack traces of errors (CLI). */
  debug: boolean;
  /** ONNX Runtime's profiler JSON per session, with this file prefix. */
  ortProfile?: string;
  /** Caps ONNX Runtime's CPU threads (several runs sharing a machine). */
  ortThreads?: number;
  /** WebGPU EP options for ONNX Runtime, "name=value,…". */
  webgpuOptions: string;
  /** Tests: uploads in this runtime scope fail as an out-of-memory device would. */
  failUploadScope?: string;
  /** Tests: the device-resident activation and Hessian paths of the pipeline on the CPU EP too. */
  testDevicePaths: boolean;
}

export function readEngineEnv(env: NodeJS.ProcessEnv = process.env): EngineEnv {
  const threads = Number(env.LOPRO_ORT_THREADS);
  return {
    engineIpc: env.LOPRO_ENGINE_IPC === '1',
    cacheDir: env.LOPRO_CACHE_DIR || undefined,
    dawnNode: env.LOPRO_DAWN_NODE || undefined,
    debug: !!env.LOPRO_DEBUG,
    ortProfile: env.LOPRO_ORT_PROFILE || undefined,
    ortThreads: Number.isInteger(threads) && threads > 0 ? threads : undefined,
    webgpuOptions: env.LOPRO_WEBGPU_OPTIONS ?? '',
    failUploadScope: env.LOPRO_FAIL_UPLOAD_SCOPE || undefined,
    testDevicePaths: env.LOPRO_TEST_DEVICE_PATHS === '1',
  };
}

/** The process's environment now (tests change it between cases). */
export function engineEnv(): EngineEnv {
  return readEngineEnv(process.env);
}
