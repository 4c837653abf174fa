// Atomic file output: write to a temp file next to the target, fsync, rename over the target,
// fsync the directory. Readers (and a crash, or a cancelled run) only ever see a complete file
// or none, because rename within one directory is atomic on POSIX and on NTFS.

import * as fs from 'node:fs';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import { ProtocolError } from '../../protocol/rpc';
import { ErrorCode } from '../../protocol/messages';

/** `<target>.tmp-<pid>-<rand>`: unique per process and call, recognisable for cleanup. */
export function tempPathFor(target: string): string {
  return `${target}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
}

const TEMP_RE = /\.tmp-(\d+)-[0-9a-f]{8}$/;

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM'; // exists, owned by someone else
  }
}

/**
 * Removes temp files in `dir` left by writers whose process no longer runs (a SIGKILLed or
 * crashed run). Temp files of live processes, this one included, are kept. Returns what was removed.
 */
export function removeStaleTemps(dir: string): string[] {
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch {
    return [];
  }
  const removed: string[] = [];
  for (const name of names) {
    const m = TEMP_RE.exec(name);
    if (!m) continue;
    const pid = Number(m[1]);
    if (pid === process.pid || pidAlive(pid)) continue;
    removeQuietly(path.join(dir, name));
    removed.push(name);
  }
  return removed;
}

export function writeError(file: string, e: unknown, doing: string): ProtocolError {
  if (e instanceof ProtocolError) return e;
  const code = (e as NodeJS.ErrnoException)?.code;
  const msg = e instanceof Error ? e.message : String(e);
  const hint = code === 'ENOSPC' ? 'the disk is full' : code === 'EACCES' || code === 'EPERM' ? 'check write permission on the output folder' : undefined;
  return new ProtocolError(ErrorCode.Io, `cannot ${doing} ${file}: ${code ?? msg}`, file, hint);
}

/** Writes the whole view at the fd's current position, looping over short writes. */
export function writeAll(fd: number, file: string, data: ArrayBufferView): void {
  const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  let done = 0;
  while (done < bytes.length) {
    try {
      done += fs.writeSync(fd, bytes, done, Math.min(bytes.length - done, 1 << 30));
    } catch (e) {
      throw writeError(file, e, 'write');
    }
  }
}

/** Best effort: makes the rename itself durable; some platforms (Windows) cannot open directories. */
export function fsyncDir(dir: string): void {
  let fd: number | undefined;
  try {
    fd = fs.openSync(dir, 'r');
    fs.fsyncSync(fd);
  } catch {
    // not supported here: the rename is still atomic, only its durability across power loss is weaker
  } finally {
    if (fd !== undefined) fs.closeSync(fd);
  }
}

export function removeQuietly(p: string): void {
  try {
    fs.unlinkSync(p);
  } catch {
    // already gone
  }
}

/** fsyncs and closes `fd` (open on `tmp`), renames `tmp` to `target`; on failure removes `tmp`. */
export function commitTemp(fd: number, tmp: string, target: string): void {
  try {
    try {
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    fs.renameSync(tmp, target);
  } catch (e) {
    removeQuietly(tmp);
    throw writeError(target, e, 'finish writing');
  }
  fsyncDir(path.dirname(target));
}

/** Atomically replaces `target` with `data` (config.json, reports, small outputs). */
export function atomicWriteFile(target: string, data: string | ArrayBufferView): void {
  const tmp = tempPathFor(target);
  let fd: number;
  try {
    fd = fs.openSync(tmp, 'wx');
  } catch (e) {
    throw writeError(target, e, 'create');
  }
  try {
    writeAll(fd, target, typeof data === 'string' ? Buffer.from(data, 'utf8') : data);
  } catch (e) {
    fs.closeSync(fd);
    removeQuietly(tmp);
    throw e;
  }
  commitTemp(fd, tmp, target);
}

/** A run of bytes of another file, copied into an output in chunks (never held whole in memory). */
export interface FileRange {
  file: string;
  offset: number;
  length: number;
}

const COPY_CHUNK = 16 * 2 ** 20;

/**
 * atomicWriteFile for a list of parts written one after another, off the main thread: the writes,
 * the fsync and the rename run on libuv's thread pool, so the caller can compute meanwhile (the pipeline
 * commits block b while block b + 1 runs, run/pipeline_llama.ts). A part is a byte view (which must not
 * change until it settles) or a range of another file, copied 16 MiB at a time.
 */
export async function atomicWriteFileAsync(target: string, parts: readonly (ArrayBufferView | FileRange)[]): Promise<void> {
  const tmp = tempPathFor(target);
  let fh: fs.promises.FileHandle;
  try {
    fh = await fs.promises.open(tmp, 'wx');
  } catch (e) {
    throw writeError(target, e, 'create');
  }
  const writeBytes = async (bytes: Uint8Array) => {
    for (let done = 0; done < bytes.length; ) {
      const { bytesWritten } = await fh.write(bytes, done, Math.min(bytes.length - done, 1 << 30));
      done += bytesWritten;
    }
  };
  try {
    try {
      for (const p of parts) {
        if (ArrayBuffer.isView(p)) await writeBytes(new Uint8Array(p.buffer, p.byteOffset, p.byteLength));
        else await copyRange(p, writeBytes);
      }
      await fh.sync();
    } finally {
      await fh.close();
    }
    await fs.promises.rename(tmp, target);
  } catch (e) {
    removeQuietly(tmp);
    throw writeError(target, e, 'write');
  }
  fsyncDir(path.dirname(target));
}

async function copyRange(r: FileRange, write: (b: Uint8Array) => Promise<void>): Promise<void> {
  const src = await fs.promises.open(r.file, 'r');
  try {
    const buf = new Uint8Array(Math.min(COPY_CHUNK, Math.max(1, r.length)));
    for (let done = 0; done < r.length; ) {
      const { bytesRead } = await src.read(buf, 0, Math.min(buf.length, r.length - done), r.offset + done);
      if (bytesRead === 0) throw new Error(`${r.file} ends at byte ${r.offset + done}, ${r.length - done} bytes short of the range copied`);
      await write(buf.subarray(0, bytesRead));
      done += bytesRead;
    }
  } finally {
    await src.close();
  }
}
