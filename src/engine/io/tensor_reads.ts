// Reading a list of checkpoint tensors as float32, for a worker thread (run/read_ahead.ts): the same bytes and the
// same conversion as SafetensorsFile.readFloat32, and where the first non-finite value sits (the caller raises
// the error with its own check, so the message is the one a direct read gives).

import * as fs from 'node:fs';
import type { Dtype } from './dtypes';
import { bytesToFloat32, ioError, readFully } from './safetensors';

/** One tensor's place in its file (a CheckpointEntry's file, offset, byteLength and dtype). */
export interface TensorRead {
  name: string;
  file: string;
  offset: number;
  byteLength: number;
  dtype: Dtype;
}

export interface TensorReadResult {
  name: string;
  data: Float32Array;
  /** Index of the first NaN/±Inf, or −1. */
  firstNonFinite: number;
}

export function readTensorsF32(reads: readonly TensorRead[]): TensorReadResult[] {
  const fds = new Map<string, number>();
  try {
    return reads.map((r) => {
      let fd = fds.get(r.file);
      if (fd === undefined) {
        try {
          fd = fs.openSync(r.file, 'r');
        } catch (e) {
          throw ioError(r.file, e, 'open');
        }
        fds.set(r.file, fd);
      }
      const bytes = new Uint8Array(r.byteLength);
      readFully(fd, r.file, bytes, 0, r.byteLength, r.offset, r.name);
      const data = bytesToFloat32(r.dtype, bytes);
      let firstNonFinite = -1;
      for (let i = 0; i < data.length; i++)
        if (!Number.isFinite(data[i])) {
          firstNonFinite = i;
          break;
        }
      return { name: r.name, data, firstNonFinite };
    });
  } finally {
    for (const fd of fds.values()) fs.closeSync(fd);
  }
}
