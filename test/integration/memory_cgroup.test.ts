// An automatic memory budget inside a real memory cgroup: the engine reads the limit of the cgroup it runs
// in (v2 memory.max or v1 memory.limit_in_bytes, protocol/machine_memory.ts), plans with 75 % of it and
// says so. The cgroup is a child of this process's own, 3 GiB; the CLI is started inside it.
// Needs write access to the cgroup hierarchy (root); elsewhere it is skipped, saying so.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { MAIN, ROOT, SMALL, tmp, TINY, TRAIN } from './helpers';

const LIMIT = 3 * 2 ** 30;

/** A child cgroup of this process's memory cgroup with LIMIT bytes, or undefined where none can be made. */
function makeCgroup(): { dir: string; procs: string } | undefined {
  const lines = readFileSync('/proc/self/cgroup', 'utf8').split('\n');
  const v2 = lines.find((l) => l.startsWith('0::'));
  const v1 = lines.find((l) => l.split(':')[1]?.split(',').includes('memory'));
  const [root, own, file] = v1 ? ['/sys/fs/cgroup/memory', v1.split(':')[2], 'memory.limit_in_bytes'] : v2 ? ['/sys/fs/cgroup', v2.slice(3), 'memory.max'] : [];
  if (!root || own === undefined || !file) return undefined;
  const dir = join(root, own, `lopro-test-${process.pid}`);
  try {
    mkdirSync(dir);
    writeFileSync(join(dir, file), String(LIMIT));
    return { dir, procs: join(dir, 'cgroup.procs') };
  } catch {
    if (existsSync(dir)) rmdirSync(dir);
    return undefined;
  }
}

const cg = existsSync('/proc/self/cgroup') ? makeCgroup() : undefined;

test('memoryBudgetMB 0 inside a 3 GiB cgroup plans with 2304 MiB, naming the cgroup', {
  skip: cg ? false : 'cannot create a memory cgroup here (needs root and a writable cgroup hierarchy)',
}, () => {
  try {
    const out = join(tmp('cgroup'), 'run');
    const cli = [process.execPath, '--import', 'tsx', MAIN, 'quantize', TINY, '--calib', TRAIN, ...SMALL, '--method', 'rtn', '--bits', '4', '--out', out];
    const r = spawnSync('sh', ['-c', `echo $$ > "$0" && exec "$@"`, cg!.procs, ...cli], { cwd: ROOT, encoding: 'utf8', env: { ...process.env, LOPRO_ENGINE_IPC: '' } });
    assert.equal(r.status, 0, r.stderr);
    const line = r.stderr.split('\n').find((l) => l.startsWith('memory plan for')) ?? '';
    assert.match(line, /^memory plan for 2304 MiB \(automatic: 75 % of 3072 MiB, the cgroup limit of \/sys\/fs\/cgroup\/.*lopro-test-\d+\)/, r.stderr);
  } finally {
    rmdirSync(cg!.dir);
  }
});
