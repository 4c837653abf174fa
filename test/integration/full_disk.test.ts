// A full disk for real: the run folder and the export folder on a small tmpfs. During a block commit and
// during the final write of the quantized model the run stops with one E_IO line ("the disk is full"), the
// blocks committed before are intact (byte for byte those of an uninterrupted run), and --resume after
// space is freed (the tmpfs remounted larger) finishes with the uninterrupted run's bytes. An export that
// does not fit leaves no partial folder and an earlier export at the same path intact.
// Needs root and mount(8) (a CI container without CAP_SYS_ADMIN skips it, saying so).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { runCli, sha256, SMALL, tmp, TINY, TRAIN } from './helpers';

function tryMount(dir: string, bytes: number): boolean {
  try {
    mkdirSync(dir, { recursive: true });
    execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${bytes}`, 'tmpfs', dir], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}
const remount = (dir: string, bytes: number) => execFileSync('mount', ['-o', `remount,size=${bytes}`, dir]);
const umount = (dir: string) => execFileSync('umount', [dir]);
const probe = join(tmp('fulldisk-probe'), 'fs');
const canMount = tryMount(probe, 1 << 20);
if (canMount) umount(probe);
const skip = canMount ? false : 'needs root and mount -t tmpfs';

const ARGS = ['--calib', TRAIN, ...SMALL, '--method', 'gptq', '--bits', '4', '--quiet'];

function sizeOf(p: string): number {
  const s = statSync(p);
  return s.isDirectory() ? readdirSync(p).reduce((a, f) => a + sizeOf(join(p, f)), 0) : s.size;
}

function expectDiskFull(args: string[], names: RegExp): string {
  const r = runCli(args);
  assert.equal(r.code, 2, r.stderr);
  const lines = r.stderr.trim().split('\n');
  assert.equal(lines.length, 1, r.stderr);
  assert.match(lines[0], /^lopro: E_IO: cannot write .*ENOSPC.*\(hint: the disk is full\)$/);
  assert.match(lines[0], names);
  return lines[0];
}

test('a full disk during block commits, during the final write and during exports: named error, committed blocks intact, resume identical', { skip }, () => {
  const root = tmp('fulldisk');
  const ref = join(root, 'ref');
  assert.equal(runCli(['quantize', TINY, ...ARGS, '--out', ref]).code, 0);
  const want = sha256(join(ref, 'native', 'model.safetensors'));
  const native = sizeOf(join(ref, 'native'));
  const withoutNative = sizeOf(ref) - native;
  const fs = join(root, 'fs');
  // Block commits: room for about half of the run's checkpoints and Hessian caches.
  for (const [what, bytes, names] of [
    ['a block commit', Math.floor(withoutNative / 2), /run\/(ckpt|hessians|details)\//],
    ['the final write', withoutNative + Math.floor(native / 2), /run\/native/],
  ] as const) {
    assert.ok(tryMount(fs, bytes));
    try {
      const run = join(fs, 'run');
      expectDiskFull(['quantize', TINY, ...ARGS, '--out', run], names);
      const m = JSON.parse(readFileSync(join(run, 'run.json'), 'utf8')) as { completedBlocks: number; complete: boolean };
      assert.equal(m.complete, false, what);
      assert.ok(m.completedBlocks >= 1, `${what}: ${m.completedBlocks} blocks committed`);
      for (let b = 0; b < m.completedBlocks; b++) {
        const f = `block-${String(b).padStart(5, '0')}.safetensors`;
        assert.equal(sha256(join(run, 'ckpt', f)), sha256(join(ref, 'ckpt', f)), `${what}: committed block ${b} intact`);
      }
      remount(fs, 64 << 20); // space freed
      const r = runCli(['quantize', TINY, ...ARGS, '--out', run, '--resume']);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(sha256(join(run, 'native', 'model.safetensors')), want, `${what}: resumed output = uninterrupted output`);
    } finally {
      umount(fs);
    }
  }
  // Exports: the first fits, the bigger one (F16) into the same folder does not and leaves the first intact.
  assert.ok(tryMount(fs, native + (256 << 10)));
  try {
    const out = join(fs, 'exp');
    assert.equal(runCli(['export', ref, '--format', 'native', '--out', out, '--quiet']).code, 0);
    for (const format of ['f16', 'onnx']) expectDiskFull(['export', ref, '--format', format, '--out', out, '--quiet'], new RegExp(`${fs}/exp`));
    assert.equal(sha256(join(out, 'model.safetensors')), want, 'the earlier export is intact');
    assert.deepEqual(readdirSync(fs), ['exp'], 'no temp folder left');
  } finally {
    umount(fs);
    rmSync(root, { recursive: true, force: true });
  }
});
