// Reader/writer round trips for every dtype, cross-checked against an independent raw encoder
// and decoder, plus the streaming writer, atomic writes and lazy reads.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { SafetensorsFile } from '../../../src/engine/io/safetensors';
import { writeSafetensorsAtomic, SafetensorsWriter, type TensorData } from '../../../src/engine/io/safetensors_writer';
import { atomicWriteFile } from '../../../src/engine/io/atomic';
import { ALL_DTYPES, DTYPE_BYTES, type Dtype } from '../../../src/engine/io/dtypes';
import { ProtocolError } from '../../../src/protocol/rpc';
import { rng, randomBytes, tmpDir, rmDir, rawSafetensors, referenceDecode, referenceFloats, sameFloats, bytesEqual } from './helpers';

const dir = tmpDir('st');
after(() => rmDir(dir));

/** One tensor per dtype with random bytes (odd shapes; NaN/inf patterns included by chance), plus a scalar and an empty tensor. */
function sampleTensors(seed: number): TensorData[] {
  const r = rng(seed);
  const out: TensorData[] = ALL_DTYPES.map((dtype, i) => {
    const shape = [1 + (i % 3) * 4, 7 + i];
    const n = shape[0] * shape[1];
    return { name: `t.${i}.${dtype.toLowerCase()}`, dtype, shape, data: randomBytes(r, n * DTYPE_BYTES[dtype]) };
  });
  out.push({ name: 'scalar', dtype: 'F32', shape: [], data: new Float32Array([Math.PI]) });
  out.push({ name: 'empty', dtype: 'F16', shape: [0, 5], data: new Uint16Array(0) });
  out.push({ name: 'ünïcode/名前', dtype: 'BF16', shape: [3], data: new Uint16Array([0x3f80, 0xc000, 0x7f80]) });
  return out;
}

const asBytes = (v: ArrayBufferView) => new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
const FLOATS: Dtype[] = ['F32', 'F16', 'BF16', 'F64'];

test('round trip of every dtype through writeSafetensorsAtomic and SafetensorsFile', () => {
  const tensors = sampleTensors(11);
  const file = path.join(dir, 'all.safetensors');
  writeSafetensorsAtomic(file, tensors, { format: 'pt', note: 'round trip' });
  const raw = new Uint8Array(fs.readFileSync(file));
  const n = Number(new DataView(raw.buffer).getBigUint64(0, true));
  assert.equal((8 + n) % 8, 0, 'header padded so data starts 8-aligned');
  assert.match(Buffer.from(raw.subarray(8, 8 + n)).toString(), /^\{.*\} *$/);
  // independent decoder agrees with what we wrote
  const ref = referenceDecode(raw);
  for (const t of tensors) assert.ok(bytesEqual(ref.get(t.name)!.bytes, asBytes(t.data)), t.name);

  const f = SafetensorsFile.open(file);
  try {
    assert.deepEqual(f.metadata, { format: 'pt', note: 'round trip' });
    assert.deepEqual(
      f.entries.map((e) => e.name),
      tensors.map((t) => t.name),
    );
    for (const t of tensors) {
      const e = f.entry(t.name);
      assert.equal(e.dtype, t.dtype);
      assert.deepEqual(e.shape, t.shape);
      assert.equal(e.byteLength, t.data.byteLength);
      assert.ok(bytesEqual(f.readBytes(t.name), asBytes(t.data)), t.name);
      const typed = f.readTyped(t.name);
      assert.equal(typed.byteLength, t.data.byteLength);
      if (FLOATS.includes(t.dtype)) {
        const f32 = f.readFloat32(t.name);
        assert.ok(sameFloats(f32, referenceFloats(t.dtype, asBytes(t.data))), `${t.name} as float32`);
      } else {
        assert.throws(
          () => f.readFloat32(t.name),
          (err: unknown) =>
            err instanceof ProtocolError && err.code === 'E_UNSUPPORTED_DTYPE' && err.message.includes(file) && err.message.includes(t.name) && err.message.includes(t.dtype),
        );
      }
    }
    assert.equal(f.readTyped(`t.${ALL_DTYPES.indexOf('I32')}.i32`).constructor, Int32Array);
    assert.equal(f.readTyped(`t.${ALL_DTYPES.indexOf('F32')}.f32`).constructor, Float32Array);
    assert.equal(f.readFloat32('scalar')[0], Math.fround(Math.PI));
    assert.equal(f.readFloat32('empty').length, 0);
    assert.deepEqual([...f.readFloat32('ünïcode/名前')], [1, -2, Infinity]);
  } finally {
    f.close();
  }
  assert.deepEqual(
    fs.readdirSync(dir).filter((x) => x.includes('.tmp-')),
    [],
    'no temp files left',
  );
});

test('reads files from an independent encoder, and readRowsFloat32 slices rows', () => {
  const r = rng(5);
  const w = new Float32Array(13 * 9).map(() => r() * 2 - 1);
  const h = new Uint16Array(6 * 4).map(() => Math.floor(r() * 0x7c00));
  const file = path.join(dir, 'raw.safetensors');
  fs.writeFileSync(
    file,
    rawSafetensors([
      { name: 'w', dtype: 'F32', shape: [13, 9], bytes: asBytes(w) },
      { name: 'h', dtype: 'F16', shape: [6, 4], bytes: asBytes(h) },
    ]),
  );
  const f = SafetensorsFile.open(file);
  assert.deepEqual([...f.readFloat32('w')], [...w]);
  assert.deepEqual([...f.readRowsFloat32('w', 3, 4)], [...w.subarray(27, 63)]);
  assert.ok(sameFloats(f.readRowsFloat32('h', 5, 1), referenceFloats('F16', asBytes(h.subarray(20, 24)))));
  assert.throws(() => f.readRowsFloat32('w', 10, 4), /outside tensor "w"/);
  assert.throws(
    () => f.readBytes('nope'),
    (e: unknown) => e instanceof ProtocolError && e.message.includes('"nope"') && e.message.includes(file),
  );
  f.close();
  assert.throws(() => f.readBytes('w'), /closed/);
});

test('streaming writer: chunks, order checks, abort and incomplete finish leave nothing behind', () => {
  const target = path.join(dir, 'stream.safetensors');
  const specs = [
    { name: 'a', dtype: 'F32' as Dtype, shape: [4, 3] },
    { name: 'z', dtype: 'I8' as Dtype, shape: [0] },
    { name: 'b', dtype: 'F8_E4M3' as Dtype, shape: [10] },
  ];
  const a = new Float32Array(12).map((_, i) => i - 5.5);
  const b = new Uint8Array(10).map((_, i) => i * 17);
  const w = SafetensorsWriter.create(target, specs, { k: 'v' });
  assert.equal(w.nextTensor, 'a');
  w.writeChunk('a', a.subarray(0, 5));
  assert.ok(!fs.existsSync(target), 'nothing at the target before finish');
  w.writeChunk('a', a.subarray(5));
  w.writeTensor('b', b); // skips the empty tensor "z"
  w.finish();
  const f = SafetensorsFile.open(target);
  assert.deepEqual([...f.readFloat32('a')], [...a]);
  assert.deepEqual([...f.readBytes('b')], [...b]);
  assert.equal(f.readBytes('z').length, 0);
  f.close();

  const out2 = path.join(dir, 'bad-order.safetensors');
  const w2 = SafetensorsWriter.create(out2, specs);
  assert.throws(() => w2.writeTensor('b', b), /out of order: expected data for "a"/);
  assert.throws(() => w2.writeTensor('a', a), /finished or aborted/, 'a failed write aborts the writer');
  const w3 = SafetensorsWriter.create(out2, specs);
  assert.throws(
    () => w3.writeTensor('a', new Float32Array(11)),
    (e: unknown) => e instanceof ProtocolError && e.code === 'E_SHAPE_MISMATCH',
  );
  const w4 = SafetensorsWriter.create(out2, specs);
  w4.writeTensor('a', a);
  assert.throws(() => w4.finish(), /before all data was written \(next: "b"/);
  const w5 = SafetensorsWriter.create(out2, specs);
  w5.writeTensor('a', a);
  w5.abort();
  w5.abort();
  assert.ok(!fs.existsSync(out2));
  assert.deepEqual(
    fs.readdirSync(dir).filter((x) => x.includes('.tmp-')),
    [],
  );
  assert.throws(() => SafetensorsWriter.create(out2, [specs[0], specs[0]]), /duplicate tensor name/);
  assert.throws(() => SafetensorsWriter.create(out2, [{ name: 'x', dtype: 'F4' as Dtype, shape: [2] }]), /unknown dtype/);
  assert.throws(() => SafetensorsWriter.create(out2, [{ name: 'x', dtype: 'F32', shape: [-1] }]), /invalid dimension/);
});

test('writeSafetensorsAtomic replaces an existing file only when complete', () => {
  const target = path.join(dir, 'replace.safetensors');
  writeSafetensorsAtomic(target, [{ name: 'x', dtype: 'I32', shape: [2], data: new Int32Array([1, 2]) }]);
  const before = fs.readFileSync(target);
  assert.throws(() => writeSafetensorsAtomic(target, [{ name: 'x', dtype: 'I32', shape: [3], data: new Int32Array([1, 2]) }]), /needs 12/);
  assert.ok(bytesEqual(fs.readFileSync(target), before), 'failed write left the old file intact');
  writeSafetensorsAtomic(target, [{ name: 'y', dtype: 'I16', shape: [3], data: new Int16Array([-1, 0, 1]) }]);
  const f = SafetensorsFile.open(target);
  assert.deepEqual([...(f.readTyped('y') as Int16Array)], [-1, 0, 1]);
  f.close();
  assert.deepEqual(
    fs.readdirSync(dir).filter((x) => x.includes('.tmp-')),
    [],
  );
});

test('atomicWriteFile writes strings and bytes, replacing the target', () => {
  const target = path.join(dir, 'config.json');
  atomicWriteFile(target, '{"a":1}');
  assert.equal(fs.readFileSync(target, 'utf8'), '{"a":1}');
  atomicWriteFile(target, new Uint8Array([0x7b, 0x7d]));
  assert.equal(fs.readFileSync(target, 'utf8'), '{}');
  assert.throws(
    () => atomicWriteFile(path.join(dir, 'no/such/dir/x.json'), 'x'),
    (e: unknown) => e instanceof ProtocolError && e.code === 'E_IO' && e.message.includes('x.json'),
  );
  assert.deepEqual(
    fs.readdirSync(dir).filter((x) => x.includes('.tmp-')),
    [],
  );
});

test('lazy reads: one small tensor of a file with a 6 GiB (sparse) tensor costs only its bytes', () => {
  // 6 GiB declared and never read (sparse on Linux/macOS; NTFS would really allocate it, so smaller there)
  const big = process.platform === 'win32' ? 64 * 1024 ** 2 : 6 * 1024 ** 3;
  const small = new Float32Array([1, 2, 3, 4, 5]);
  const header = JSON.stringify({
    big: { dtype: 'F32', shape: [big / 4], data_offsets: [0, big] },
    small: { dtype: 'F32', shape: [5], data_offsets: [big, big + 20] },
  }).padEnd(160, ' ');
  const file = path.join(dir, 'sparse.safetensors');
  const fd = fs.openSync(file, 'w');
  const prefix = Buffer.alloc(8);
  prefix.writeBigUInt64LE(BigInt(header.length));
  fs.writeSync(fd, prefix);
  fs.writeSync(fd, header);
  fs.writeSync(fd, asBytes(small), 0, 20, 8 + header.length + big);
  fs.closeSync(fd);
  assert.equal(fs.statSync(file).size, 8 + header.length + big + 20);
  const t0 = performance.now();
  const f = SafetensorsFile.open(file);
  assert.equal(f.bytesRead, 8 + header.length, 'open reads only the prefix and the header');
  assert.deepEqual([...f.readFloat32('small')], [1, 2, 3, 4, 5]);
  assert.equal(f.bytesRead, 8 + header.length + 20, 'reading "small" read exactly its 20 bytes');
  const rows = f.readRowsFloat32('big', 1000, 3);
  assert.deepEqual([...rows], [0, 0, 0]);
  assert.equal(f.bytesRead, 8 + header.length + 20 + 12);
  f.close();
  const ms = performance.now() - t0;
  assert.ok(ms < 1000, `took ${ms.toFixed(1)} ms`); // measured ~1 ms
  fs.unlinkSync(file);
});

test('a writer killed with SIGKILL mid-file leaves no output, and its temp file is cleaned up later', async () => {
  const { spawn } = await import('node:child_process');
  const { removeStaleTemps } = await import('../../../src/engine/io/atomic');
  const target = path.join(dir, 'killed.safetensors');
  const script = path.join(dir, 'killed-writer.ts');
  const writerModule = path.resolve(__dirname, '../../../src/engine/io/safetensors_writer.ts');
  fs.writeFileSync(
    script,
    `
    import { SafetensorsWriter } from ${JSON.stringify(writerModule)};
    const w = SafetensorsWriter.create(${JSON.stringify(target)}, [{ name: 'a', dtype: 'F32', shape: [1024] }, { name: 'b', dtype: 'F32', shape: [1024] }]);
    w.writeTensor('a', new Float32Array(1024).fill(1));
    process.stdout.write('half\\n');
    setInterval(() => {}, 1000);
  `,
  );
  const child = spawn(process.execPath, ['--import', 'tsx', script], { cwd: path.resolve(__dirname, '../../..'), stdio: ['ignore', 'pipe', 'inherit'] });
  await new Promise<void>((resolve, reject) => {
    child.stdout.on('data', (d: Buffer) => {
      if (d.toString().includes('half')) resolve();
    });
    child.on('exit', (code) => reject(new Error(`child exited early (${code})`)));
  });
  const exited = new Promise((resolve) => child.on('exit', resolve));
  child.kill('SIGKILL');
  await exited;
  assert.ok(!fs.existsSync(target), 'no partial output at the target');
  const temps = fs.readdirSync(dir).filter((x) => x.startsWith('killed.safetensors.tmp-'));
  assert.equal(temps.length, 1, 'the killed writer left its temp file');
  assert.deepEqual(removeStaleTemps(dir), temps);
  assert.deepEqual(
    fs.readdirSync(dir).filter((x) => x.includes('.tmp-')),
    [],
  );
  // a live writer's temp (this process) is never removed
  const w = SafetensorsWriter.create(target, [{ name: 'x', dtype: 'U8', shape: [1] }]);
  assert.deepEqual(removeStaleTemps(dir), []);
  w.abort();
});

test('tensor and metadata names that are Object.prototype keys round-trip as plain keys', () => {
  const file = path.join(dir, 'proto.safetensors');
  writeSafetensorsAtomic(
    file,
    [
      { name: '__proto__', dtype: 'U8', shape: [2], data: new Uint8Array([1, 2]) },
      { name: 'constructor', dtype: 'U8', shape: [1], data: new Uint8Array([3]) },
    ],
    { __proto__x: 'a', toString: 'b' },
  );
  const f = SafetensorsFile.open(file);
  assert.deepEqual(
    f.entries.map((e) => e.name),
    ['__proto__', 'constructor'],
  );
  assert.deepEqual([...f.readBytes('__proto__')], [1, 2]);
  assert.equal(f.metadata.toString, 'b');
  f.close();
});
