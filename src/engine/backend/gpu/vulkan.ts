// Whether Dawn can reach a GPU through Vulkan at all on this Linux machine: its loader (libvulkan.so.1) must
// be installed. Checked on the file system before any native code is loaded, so that a machine without it
// gets one line that names the package, not a loader error.

import { existsSync } from 'node:fs';
import { join } from 'node:path';

const LIB_DIRS = [
  '/usr/lib/x86_64-linux-gnu',
  '/usr/lib/aarch64-linux-gnu',
  '/lib/x86_64-linux-gnu',
  '/lib/aarch64-linux-gnu',
  '/usr/lib64',
  '/usr/lib',
  '/lib64',
  '/lib',
  '/usr/local/lib',
];

/** Why Vulkan cannot be used here (one line naming what to install), or undefined. */
export function vulkanLoaderMissing(env: NodeJS.ProcessEnv = process.env, exists: (p: string) => boolean = existsSync): string | undefined {
  if (process.platform !== 'linux') return undefined; // Metal (macOS) and D3D12 (Windows) need no loader
  const dirs = [...(env.LD_LIBRARY_PATH ?? '').split(':').filter(Boolean), ...LIB_DIRS];
  if (dirs.some((d) => exists(join(d, 'libvulkan.so.1')))) return undefined;
  return "no Vulkan loader (libvulkan.so.1): install it (Debian/Ubuntu: apt-get install libvulkan1) and the GPU vendor's Vulkan driver";
}
