// One view over the three ways a checkpoint arrives: a bare .safetensors file, a folder with
// model.safetensors, or a folder with model.safetensors.index.json and shards. Every shard's
// header is read and validated at open time (cheap: headers only); tensor data stays lazy.

import * as fs from 'node:fs';
import * as path from 'node:path';
import { ProtocolError } from '../../protocol/rpc';
import { ErrorCode } from '../../protocol/messages';
import { setOwn } from './safetensors_header';
import { SafetensorsFile, ioError, type TensorEntry, type TypedArray } from './safetensors';

export const SINGLE_FILE = 'model.safetensors';
export const INDEX_FILE = 'model.safetensors.index.json';
/** An index is JSON that names shards; anything near this size is not one. */
const MAX_INDEX_BYTES = 64 * 1024 * 1024;

export interface CheckpointEntry extends TensorEntry {
  /** The shard (absolute path) holding this tensor. */
  file: string;
}

export interface Checkpoint {
  /** What was opened (the file, or the folder). */
  readonly path: string;
  readonly kind: 'file' | 'folder' | 'sharded';
  /** Safetensors files, in index order (one for a single file). */
  readonly files: readonly string[];
  /** The index file, for a sharded checkpoint. */
  readonly indexFile?: string;
  /** Tensors in file order, then header order. */
  readonly entries: readonly CheckpointEntry[];
  /** Merged `__metadata__` of the shards (first shard wins on conflicts). */
  readonly metadata: Readonly<Record<string, string>>;
  /** Sum of tensor byte sizes. */
  readonly totalBytes: number;
  has(name: string): boolean;
  entry(name: string): CheckpointEntry;
  readBytes(name: string): Uint8Array;
  readTyped(name: string): TypedArray;
  readFloat32(name: string): Float32Array;
  readRowsFloat32(name: string, rowStart: number, rowCount: number): Float32Array;
  /** Total bytes read from disk (headers included). */
  bytesRead(): number;
  close(): void;
}

function badIndex(file: string, what: string, tensor?: string): ProtocolError {
  const subject = tensor === undefined ? file : `${file}, tensor "${tensor}"`;
  return new ProtocolError(
    ErrorCode.BadCheckpoint,
    `bad sharded checkpoint index ${subject}: ${what}`,
    tensor === undefined ? file : `${file}: ${tensor}`,
    'the index and its shard files must come from the same export; re-download the checkpoint',
  );
}

function statOrThrow(p: string): fs.Stats {
  try {
    return fs.statSync(p);
  } catch (e) {
    throw ioError(p, e, 'open');
  }
}

/** Opens a .safetensors file, a folder with model.safetensors, or a sharded folder (or its index file). */
export function openCheckpoint(pathOrDir: string): Checkpoint {
  const abs = path.resolve(pathOrDir);
  const st = statOrThrow(abs);
  if (st.isFile()) {
    if (abs.endsWith('.index.json')) return openSharded(abs, abs);
    return single(abs, 'file', SafetensorsFile.open(abs));
  }
  if (!st.isDirectory()) throw new ProtocolError(ErrorCode.Io, `cannot open ${abs}: not a file or folder`, abs);
  const singlePath = path.join(abs, SINGLE_FILE);
  if (fs.existsSync(singlePath)) return single(abs, 'folder', SafetensorsFile.open(singlePath));
  const indexPath = path.join(abs, INDEX_FILE);
  if (fs.existsSync(indexPath)) return openSharded(abs, indexPath);
  throw new ProtocolError(ErrorCode.BadCheckpoint, `no ${SINGLE_FILE} or ${INDEX_FILE} in ${abs}`, abs, 'point at a Hugging Face model folder or a .safetensors file');
}

function single(p: string, kind: 'file' | 'folder', f: SafetensorsFile): Checkpoint {
  return makeCheckpoint(p, kind, [f], undefined);
}

function openSharded(p: string, indexPath: string): Checkpoint {
  const weightMap = readIndex(indexPath);
  const dir = path.dirname(indexPath);
  // "a.safetensors" and "./a.safetensors" are one shard: key shards by resolved path.
  const shardPaths = [...new Set([...weightMap.values()].map((f) => path.resolve(dir, f)))];
  const shards: SafetensorsFile[] = [];
  try {
    for (const shardPath of shardPaths) {
      if (!fs.existsSync(shardPath)) {
        const tensor = [...weightMap].find(([, f]) => path.resolve(dir, f) === shardPath)?.[0];
        throw new ProtocolError(
          ErrorCode.BadCheckpoint,
          `shard file ${shardPath} listed in ${indexPath} (for tensor "${tensor}" and others) does not exist`,
          indexPath,
          'the download is incomplete: fetch the missing shard',
        );
      }
      shards.push(SafetensorsFile.open(shardPath));
    }
    const seen = new Map<string, string>();
    for (const shard of shards) {
      for (const e of shard.entries) {
        const other = seen.get(e.name);
        if (other !== undefined) throw badIndex(indexPath, `tensor is stored in two shards, ${other} and ${shard.path}`, e.name);
        seen.set(e.name, shard.path);
      }
    }
    for (const shard of shards) {
      for (const e of shard.entries) {
        const listed = weightMap.get(e.name);
        if (listed === undefined) throw badIndex(indexPath, `tensor is in shard ${shard.path} but not in the index's weight_map`, e.name);
        if (path.resolve(dir, listed) !== shard.path) throw badIndex(indexPath, `index says shard "${listed}" but the tensor is in ${shard.path}`, e.name);
      }
    }
    for (const [tensor, shardName] of weightMap) {
      if (!seen.has(tensor)) throw badIndex(indexPath, `listed for shard ${path.resolve(dir, shardName)} but that shard has no such tensor`, tensor);
    }
  } catch (e) {
    for (const s of shards) s.close();
    throw e;
  }
  return makeCheckpoint(p, 'sharded', shards, indexPath);
}

/** weight_map as tensor → shard file name (relative to the index), validated. */
function readIndex(indexPath: string): Map<string, string> {
  const st = statOrThrow(indexPath);
  if (st.size > MAX_INDEX_BYTES) throw badIndex(indexPath, `file is ${st.size} bytes, too large for an index`);
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(fs.readFileSync(indexPath));
  } catch (e) {
    if (e instanceof TypeError) throw badIndex(indexPath, 'not valid UTF-8');
    throw ioError(indexPath, e, 'read');
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw badIndex(indexPath, `not valid JSON (${e instanceof Error ? e.message : String(e)})`);
  }
  const isObj = (x: unknown): x is Record<string, unknown> => typeof x === 'object' && x !== null && !Array.isArray(x);
  if (!isObj(json)) throw badIndex(indexPath, 'must be a JSON object');
  if (!isObj(json.weight_map)) throw badIndex(indexPath, '"weight_map" must be an object mapping tensor names to shard files');
  const map = new Map<string, string>();
  for (const [tensor, file] of Object.entries(json.weight_map)) {
    if (typeof file !== 'string' || file === '') throw badIndex(indexPath, `shard for the tensor must be a file name, got ${JSON.stringify(file)}`, tensor);
    // A shard must sit in the index's folder: no absolute paths or "..", so an index cannot make us read elsewhere.
    if (path.isAbsolute(file) || file.split(/[\\/]/).some((part) => part === '..') || file.includes('\0')) {
      throw badIndex(indexPath, `shard path "${file}" points outside the checkpoint folder`, tensor);
    }
    map.set(tensor, file);
  }
  if (map.size === 0) throw badIndex(indexPath, '"weight_map" is empty');
  return map;
}

function makeCheckpoint(p: string, kind: Checkpoint['kind'], shards: SafetensorsFile[], indexFile: string | undefined): Checkpoint {
  const entries: CheckpointEntry[] = [];
  const owner = new Map<string, SafetensorsFile>();
  const metadata: Record<string, string> = {};
  let totalBytes = 0;
  for (const s of shards) {
    for (const e of s.entries) {
      entries.push({ ...e, shape: e.shape.slice(), file: s.path });
      owner.set(e.name, s);
      totalBytes += e.byteLength;
    }
    for (const [k, v] of Object.entries(s.metadata)) if (!Object.hasOwn(metadata, k)) setOwn(metadata, k, v);
  }
  const byName = new Map(entries.map((e) => [e.name, e]));
  const shardOf = (name: string): SafetensorsFile => {
    const s = owner.get(name);
    if (!s) throw new ProtocolError(ErrorCode.BadCheckpoint, `tensor "${name}" not found in ${p}`, `${p}: ${name}`);
    return s;
  };
  return {
    path: p,
    kind,
    files: shards.map((s) => s.path),
    indexFile,
    entries,
    metadata,
    totalBytes,
    has: (name) => byName.has(name),
    entry: (name) => {
      shardOf(name);
      return byName.get(name)!;
    },
    readBytes: (name) => shardOf(name).readBytes(name),
    readTyped: (name) => shardOf(name).readTyped(name),
    readFloat32: (name) => shardOf(name).readFloat32(name),
    readRowsFloat32: (name, r0, n) => shardOf(name).readRowsFloat32(name, r0, n),
    bytesRead: () => shards.reduce((sum, s) => sum + s.bytesRead, 0),
    close: () => shards.forEach((s) => s.close()),
  };
}
