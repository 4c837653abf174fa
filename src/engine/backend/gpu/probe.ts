// Whether this machine has a WebGPU adapter, asked of a child process: the Vulkan loader and drivers print
// warnings (XDG_RUNTIME_DIR, CPU emulations Dawn refuses) with native source lines straight to stderr, and a
// machine without a GPU should see one plain line saying why, not those. Used by the backend choice
// (backend/open.ts) and by ONNX Runtime's EP choice (compute/runtime.ts: its WebGPU EP has a Dawn of its own).

import { execFileSync } from 'node:child_process';
import { dawnNodePath, ensureRuntimeDir } from './dawn';
import { vulkanLoaderMissing } from './vulkan';

export interface AdapterProbe {
  /** The adapter's description, when there is one. */
  adapter?: string;
  /** A CPU emulation (SwiftShader, lavapipe): correct, and slower than the CPU backend. */
  fallback?: boolean;
  /** Why there is none, in one line. */
  reason?: string;
}

let probed: AdapterProbe | undefined;

/** Whether a WebGPU adapter exists, asked of a child process (its native warnings stay there). Cached per process. */
export function probeAdapter(): AdapterProbe {
  if (probed) return probed;
  const dawn = dawnNodePath();
  const missing = vulkanLoaderMissing();
  if (!dawn) probed = { reason: 'the webgpu package (dawn.node) is not installed for this platform' };
  else if (missing) probed = { reason: missing };
  else {
    ensureRuntimeDir();
    const script = `const m=require(${JSON.stringify(dawn)});const g=m.create([]);g.requestAdapter({powerPreference:'high-performance'}).then((a)=>{process.stdout.write(JSON.stringify(a?{adapter:[a.info.vendor,a.info.architecture,a.info.description].filter(Boolean).join(' '),fallback:!!a.info.isFallbackAdapter}:{}));process.exit(0)},(e)=>{process.stdout.write(JSON.stringify({error:String(e&&e.message||e)}));process.exit(0)})`;
    try {
      const out = execFileSync(process.execPath, ['-e', script], {
        encoding: 'utf8',
        stdio: ['ignore', 'pipe', 'pipe'],
        timeout: 60_000,
        env: { ...process.env, ELECTRON_RUN_AS_NODE: '1' },
      });
      const r = JSON.parse(out.trim() || '{}') as { adapter?: string; fallback?: boolean; error?: string };
      probed = r.adapter
        ? { adapter: r.adapter, fallback: r.fallback }
        : { reason: r.error ? `WebGPU failed: ${r.error}` : "no WebGPU adapter: the Vulkan drivers found no GPU; install the GPU vendor's Vulkan driver" };
    } catch (e) {
      probed = { reason: `the WebGPU probe failed: ${e instanceof Error ? e.message.split('\n')[0] : String(e)}` };
    }
  }
  return probed;
}
