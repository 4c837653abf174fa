// The engine's peak resident memory over one run, and the memory it may use. The engine process of VS Code
// serves run after run, and getrusage's maxRSS is a lifetime peak: on Linux the peak (VmHWM) is reset at a run's
// start by writing 5 to /proc/self/clear_refs and read from /proc/self/status; elsewhere the lifetime peak is what
// there is.

import { readFileSync, writeFileSync } from 'node:fs';
import { totalmem } from 'node:os';
import { type AvailableMemory, availableMemory, probeWith } from '../../protocol/machine_memory';

/** Starts a new peak where the platform allows it; says whether it did. */
export function resetPeakMemory(): boolean {
  try {
    writeFileSync('/proc/self/clear_refs', '5');
    return true;
  } catch {
    return false;
  }
}

/** Peak resident bytes since the last reset (Linux), or over the process's life. */
export function peakMemoryBytes(): number {
  try {
    const m = /^VmHWM:\s+(\d+) kB$/m.exec(readFileSync('/proc/self/status', 'utf8'));
    if (m) return Number(m[1]) * 1024;
  } catch {
    // not Linux
  }
  return process.resourceUsage().maxRSS * 1024;
}

/** What this process may use: physical memory, or a cgroup's limit where lower (protocol/machine_memory.ts). */
export function machineMemory(): AvailableMemory {
  return availableMemory(probeWith(readFileSync, totalmem()));
}
