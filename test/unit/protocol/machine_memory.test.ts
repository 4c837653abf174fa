// What the engine may use: physical memory, or the lowest cgroup limit on the way from this process's
// cgroup up to the root (v2 memory.max, v1 memory.limit_in_bytes; "max" and v1's huge "no limit" are none),
// from /proc and /sys contents handed in; and the automatic budget (memoryBudgetMB 0) as its share.

import { test } from 'node:test';
import { totalmem } from 'node:os';
import assert from 'node:assert/strict';
import { AUTO_BUDGET_FRACTION, availableMemory, resolveBudgetMB } from '../../../src/protocol/machine_memory';
import { machineMemory } from '../../../src/engine/util/peak_memory';

const GiB = 2 ** 30;
const probe = (files: Record<string, string>, total = 64 * GiB) => ({ totalBytes: total, read: (f: string) => files[f] });

test('cgroup v2: the lowest limit from the process cgroup up to the root; "max" is none', () => {
  const files = {
    '/proc/self/cgroup': '0::/user.slice/lopro-8G\n',
    '/sys/fs/cgroup/user.slice/lopro-8G/memory.max': 'max\n',
    '/sys/fs/cgroup/user.slice/memory.max': `${8 * GiB}\n`,
    '/sys/fs/cgroup/memory.max': `${32 * GiB}\n`,
  };
  assert.deepEqual(availableMemory(probe(files)), { bytes: 8 * GiB, source: 'the cgroup limit of /sys/fs/cgroup/user.slice' });
  // A container's namespace root ("0::/") is its own cgroup.
  assert.deepEqual(availableMemory(probe({ '/proc/self/cgroup': '0::/\n', '/sys/fs/cgroup/memory.max': `${4 * GiB}` })).bytes, 4 * GiB);
  // A limit above physical memory changes nothing.
  assert.deepEqual(availableMemory(probe({ '/proc/self/cgroup': '0::/\n', '/sys/fs/cgroup/memory.max': `${128 * GiB}` })), { bytes: 64 * GiB, source: 'physical memory' });
});

test("cgroup v1: the memory controller's limit_in_bytes; v1's no-limit value is none; no /proc: physical memory", () => {
  const v1 = { '/proc/self/cgroup': '12:cpu,cpuacct:/x\n11:memory:/docker/abc\n', '/sys/fs/cgroup/memory/docker/abc/memory.limit_in_bytes': `${6 * GiB}` };
  assert.deepEqual(availableMemory(probe(v1)), { bytes: 6 * GiB, source: 'the cgroup limit of /sys/fs/cgroup/memory/docker/abc' });
  const none = { '/proc/self/cgroup': '11:memory:/\n', '/sys/fs/cgroup/memory/memory.limit_in_bytes': '9223372036854771712' };
  assert.equal(availableMemory(probe(none)).source, 'physical memory');
  assert.deepEqual(availableMemory(probe({}, 16 * GiB)), { bytes: 16 * GiB, source: 'physical memory' });
});

test('memoryBudgetMB 0 plans with its share of what is available, saying so; any other value as given', () => {
  const a = { bytes: 8 * GiB, source: 'the cgroup limit of /sys/fs/cgroup/x' };
  assert.deepEqual(resolveBudgetMB(4096, a), { mb: 4096 });
  const auto = resolveBudgetMB(0, a);
  assert.equal(auto.mb, Math.floor(AUTO_BUDGET_FRACTION * 8192));
  assert.match(auto.auto ?? '', /^automatic: 75 % of 8192 MiB, the cgroup limit of \/sys\/fs\/cgroup\/x$/);
  // This machine, read for real: positive and at most its physical memory.
  const here = machineMemory();
  assert.ok(here.bytes > 0 && here.bytes <= totalmem(), JSON.stringify(here));
});
