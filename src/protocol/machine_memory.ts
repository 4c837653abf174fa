// How much memory this process may use: the machine's physical memory, or less where a cgroup limits it
// (containers, systemd slices, `systemd-run -p MemoryMax=…`). Pure over an injected file reader, so the
// engine and the extension host (which estimates in the config panel) read it the same way, and tests can
// hand it any /proc and /sys contents.

export interface MemoryProbe {
  totalBytes: number;
  /** A file's text, or undefined when it cannot be read. */
  read(path: string): string | undefined;
}

/** A probe over Node's readFileSync (unreadable files: undefined) and os.totalmem(), for the engine and the host alike. */
export function probeWith(readFileSync: (path: string, encoding: 'utf8') => string, totalBytes: number): MemoryProbe {
  return {
    totalBytes,
    read: (path) => {
      try {
        return readFileSync(path, 'utf8');
      } catch {
        return undefined;
      }
    },
  };
}

export interface AvailableMemory {
  bytes: number;
  /** "physical memory" or "the cgroup limit of /path". */
  source: string;
}

const NO_LIMIT = 2 ** 60; // cgroup v1 reports "no limit" as a page-rounded 2^63 − 1

function limitAt(read: MemoryProbe['read'], file: string): number | undefined {
  const t = read(file)?.trim();
  if (!t || t === 'max') return undefined;
  const v = Number(t);
  return Number.isFinite(v) && v > 0 && v < NO_LIMIT ? v : undefined;
}

/** The folders from `path` up to the hierarchy's root: a limit anywhere above applies too. */
function upwards(root: string, path: string): string[] {
  const parts = path.split('/').filter(Boolean);
  const out: string[] = [];
  for (let k = parts.length; k >= 0; k--) out.push(`${root}${k ? `/${parts.slice(0, k).join('/')}` : ''}`);
  return out;
}

export function availableMemory(p: MemoryProbe): AvailableMemory {
  let best: AvailableMemory = { bytes: p.totalBytes, source: 'physical memory' };
  const consider = (dir: string, file: string) => {
    const v = limitAt(p.read, `${dir}/${file}`);
    if (v !== undefined && v < best.bytes) best = { bytes: v, source: `the cgroup limit of ${dir}` };
  };
  for (const line of (p.read('/proc/self/cgroup') ?? '').split('\n')) {
    const [, controllers, path] = line.split(':');
    if (path === undefined) continue;
    if (controllers === '') for (const d of upwards('/sys/fs/cgroup', path)) consider(d, 'memory.max');
    else if (controllers.split(',').includes('memory')) for (const d of upwards('/sys/fs/cgroup/memory', path)) consider(d, 'memory.limit_in_bytes');
  }
  return best;
}

/** memoryBudgetMB 0 ("automatic") takes this share of the available memory. */
export const AUTO_BUDGET_FRACTION = 0.75;

/** The budget a run plans with: as configured, or for 0 the automatic share of what is available. */
export function resolveBudgetMB(configuredMB: number, available: AvailableMemory): { mb: number; auto?: string } {
  if (configuredMB > 0) return { mb: configuredMB };
  const mb = Math.floor((AUTO_BUDGET_FRACTION * available.bytes) / 2 ** 20);
  return { mb, auto: `automatic: ${Math.round(100 * AUTO_BUDGET_FRACTION)} % of ${Math.round(available.bytes / 2 ** 20)} MiB, ${available.source}` };
}
