// protocol/engine_env.ts: the environment the host starts the engine with. The string handling, and the
// effect itself: a child started with engineEnv backs a large typed array with transparent huge pages
// (AnonHugePages in /proc/self/smaps_rollup), one started without does not. Skipped where the kernel has
// THP off ("never") or there is no /proc (not Linux) — the tunable is then a no-op by design.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { engineEnv } from '../../../src/protocol/engine_env';

test('engineEnv adds glibc.malloc.hugetlb=1 once, keeps other tunables, and is off with LOPRO_HUGEPAGES=off', () => {
  assert.equal(engineEnv({}).GLIBC_TUNABLES, 'glibc.malloc.hugetlb=1');
  assert.equal(engineEnv({ GLIBC_TUNABLES: 'glibc.malloc.arena_max=2' }).GLIBC_TUNABLES, 'glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1');
  assert.equal(engineEnv({ GLIBC_TUNABLES: 'glibc.malloc.hugetlb=0' }).GLIBC_TUNABLES, 'glibc.malloc.hugetlb=0');
  assert.equal(engineEnv({ LOPRO_HUGEPAGES: 'off' }).GLIBC_TUNABLES, undefined);
  const env = { PATH: '/bin' };
  assert.notEqual(engineEnv(env), env, "a copy, not the caller's object");
});

test('a process started with engineEnv backs a 256 MB array with huge pages', (t) => {
  const mode = '/sys/kernel/mm/transparent_hugepage/enabled';
  if (!existsSync('/proc/self/smaps_rollup') || !existsSync(mode) || /\[never\]/.test(readFileSync(mode, 'utf8'))) {
    t.skip('no transparent huge pages on this machine');
    return;
  }
  const probe =
    "const a = new Float32Array(64 * 2 ** 20); a.fill(1); process.stdout.write(/AnonHugePages:\\s+(\\d+) kB/.exec(require('fs').readFileSync('/proc/self/smaps_rollup', 'utf8'))[1]);";
  const huge = (env: NodeJS.ProcessEnv) => Number(spawnSync(process.execPath, ['-e', probe], { env, encoding: 'utf8' }).stdout);
  const base = { ...process.env, GLIBC_TUNABLES: undefined, LOPRO_HUGEPAGES: undefined };
  assert.ok(huge(engineEnv(base) as NodeJS.ProcessEnv) >= 128 * 1024, 'with engineEnv: at least half of the array in huge pages');
  if (/\[madvise\]/.test(readFileSync(mode, 'utf8'))) assert.ok(huge(base) < 64 * 1024, 'madvise mode without the tunable: (almost) none');
});
