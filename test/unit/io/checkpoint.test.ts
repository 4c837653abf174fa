// openCheckpoint over a single file, a model folder, and sharded folders (good and broken).
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { openCheckpoint } from '../../../src/engine/io/checkpoint';
import { writeSafetensorsAtomic, type TensorData } from '../../../src/engine/io/safetensors_writer';
import { atomicWriteFile } from '../../../src/engine/io/atomic';
import { ProtocolError } from '../../../src/protocol/rpc';
import { rng, tmpDir, rmDir } from './helpers';

const root = tmpDir('ckpt');
after(() => rmDir(root));

function tensors(seed: number, names: string[]): TensorData[] {
  const r = rng(seed);
  return names.map((name, i) => ({ name, dtype: 'F32', shape: [2, 3 + i], data: new Float32Array(2 * (3 + i)).map(() => r()) }));
}

/** A sharded folder: shard i holds `groups[i]`; `index` lets a test corrupt the weight_map. */
function sharded(name: string, groups: string[][], edit?: (wm: Record<string, string>) => void): { dir: string; data: Map<string, Float32Array> } {
  const dir = path.join(root, name);
  fs.mkdirSync(dir);
  const wm: Record<string, string> = {};
  const data = new Map<string, Float32Array>();
  groups.forEach((g, i) => {
    const file = `model-${String(i + 1).padStart(5, '0')}-of-${String(groups.length).padStart(5, '0')}.safetensors`;
    const ts = tensors(i + 1, g);
    writeSafetensorsAtomic(path.join(dir, file), ts, { format: 'pt' });
    for (const t of ts) {
      wm[t.name] = file;
      data.set(t.name, t.data as Float32Array);
    }
  });
  edit?.(wm);
  atomicWriteFile(path.join(dir, 'model.safetensors.index.json'), JSON.stringify({ metadata: { total_size: 0 }, weight_map: wm }));
  return { dir, data };
}

const isBad = (needle: string[]) => (e: unknown) => {
  assert.ok(e instanceof ProtocolError, String(e));
  assert.equal(e.code, 'E_BAD_CHECKPOINT', e.message);
  for (const n of needle) assert.ok(e.message.includes(n), `"${n}" missing from: ${e.message}`);
  return true;
};

test('single file and folder with model.safetensors', () => {
  const dir = path.join(root, 'single');
  fs.mkdirSync(dir);
  const ts = tensors(9, ['a', 'b']);
  writeSafetensorsAtomic(path.join(dir, 'model.safetensors'), ts);
  for (const p of [dir, path.join(dir, 'model.safetensors')]) {
    const c = openCheckpoint(p);
    assert.equal(c.kind, p === dir ? 'folder' : 'file');
    assert.deepEqual(
      c.entries.map((e) => e.name),
      ['a', 'b'],
    );
    assert.deepEqual([...c.readFloat32('b')], [...(ts[1].data as Float32Array)]);
    assert.equal(c.totalBytes, 4 * (6 + 8));
    c.close();
  }
});

test('sharded folder: tensors from every shard, lazily, via the folder or the index file', () => {
  const { dir, data } = sharded('good', [['x.0', 'x.1'], ['y.0'], ['z.0', 'z.1', 'z.2']]);
  for (const p of [dir, path.join(dir, 'model.safetensors.index.json')]) {
    const c = openCheckpoint(p);
    assert.equal(c.kind, 'sharded');
    assert.equal(c.files.length, 3);
    assert.equal(c.entries.length, 6);
    assert.equal(c.metadata.format, 'pt');
    const afterOpen = c.bytesRead();
    assert.deepEqual([...c.readFloat32('z.1')], [...data.get('z.1')!]);
    assert.equal(c.bytesRead() - afterOpen, data.get('z.1')!.byteLength, 'read only that tensor');
    for (const [name, want] of data) assert.deepEqual([...c.readFloat32(name)], [...want], name);
    assert.ok(c.entry('y.0').file.endsWith('model-00002-of-00003.safetensors'));
    assert.throws(() => c.readBytes('nope'), /tensor "nope" not found/);
    c.close();
  }
});

test('sharded folder: broken indexes are refused with file and tensor named', () => {
  const missingShard = sharded('missing-shard', [['a'], ['b']]);
  fs.unlinkSync(path.join(missingShard.dir, 'model-00002-of-00002.safetensors'));
  assert.throws(() => openCheckpoint(missingShard.dir), isBad(['model-00002-of-00002.safetensors', 'does not exist', '"b"']));

  const ghost = sharded('ghost-tensor', [['a'], ['b']], (wm) => {
    wm.ghost = 'model-00001-of-00002.safetensors';
  });
  assert.throws(() => openCheckpoint(ghost.dir), isBad(['"ghost"', 'has no such tensor', 'model.safetensors.index.json']));

  const unlisted = sharded('unlisted', [['a', 'extra'], ['b']], (wm) => {
    delete wm.extra;
  });
  assert.throws(() => openCheckpoint(unlisted.dir), isBad(['"extra"', 'not in the index']));

  const wrongShard = sharded('wrong-shard', [['a'], ['b']], (wm) => {
    wm.a = 'model-00002-of-00002.safetensors';
  });
  assert.throws(() => openCheckpoint(wrongShard.dir), isBad(['"a"']));

  const dup = sharded('dup', [
    ['a', 'b'],
    ['b', 'c'],
  ]);
  assert.throws(() => openCheckpoint(dup.dir), isBad(['"b"', 'stored in two shards']));

  const escape = sharded('escape', [['a']], (wm) => {
    wm.a = '../good/model-00001-of-00003.safetensors';
  });
  assert.throws(() => openCheckpoint(escape.dir), isBad(['outside the checkpoint folder', '"a"']));

  const badJson = path.join(root, 'bad-json');
  fs.mkdirSync(badJson);
  fs.writeFileSync(path.join(badJson, 'model.safetensors.index.json'), '{"weight_map": {');
  assert.throws(() => openCheckpoint(badJson), isBad(['not valid JSON', 'model.safetensors.index.json']));
  fs.writeFileSync(path.join(badJson, 'model.safetensors.index.json'), '{"weight_map": {"a": 3}}');
  assert.throws(() => openCheckpoint(badJson), isBad(['"a"', 'must be a file name']));
  fs.writeFileSync(path.join(badJson, 'model.safetensors.index.json'), '{"metadata": {}}');
  assert.throws(() => openCheckpoint(badJson), isBad(['"weight_map" must be an object']));

  const empty = path.join(root, 'empty');
  fs.mkdirSync(empty);
  assert.throws(() => openCheckpoint(empty), isBad(['no model.safetensors or model.safetensors.index.json', empty]));
  assert.throws(
    () => openCheckpoint(path.join(root, 'absent')),
    (e: unknown) => e instanceof ProtocolError && e.code === 'E_IO',
  );
});

test('a corrupt shard is reported with the shard file named', () => {
  const s = sharded('corrupt-shard', [['a'], ['b']]);
  const shard = path.join(s.dir, 'model-00002-of-00002.safetensors');
  const bytes = fs.readFileSync(shard);
  fs.writeFileSync(shard, bytes.subarray(0, bytes.length - 3));
  assert.throws(() => openCheckpoint(s.dir), isBad([shard, '"b"', 'run past the end']));
});

test('writeShardIndex produces an index that openCheckpoint reads', async () => {
  const { writeShardIndex } = await import('../../../src/engine/io/safetensors_writer');
  const dir = path.join(root, 'written-index');
  fs.mkdirSync(dir);
  const a = tensors(1, ['p', 'q']),
    b = tensors(2, ['r']);
  writeSafetensorsAtomic(path.join(dir, 'out-1.safetensors'), a);
  writeSafetensorsAtomic(path.join(dir, 'out-2.safetensors'), b);
  writeShardIndex(path.join(dir, 'model.safetensors.index.json'), { r: 'out-2.safetensors', p: 'out-1.safetensors', q: 'out-1.safetensors' }, 4 * (6 + 8 + 6));
  const c = openCheckpoint(dir);
  assert.equal(c.kind, 'sharded');
  assert.deepEqual([...c.readFloat32('r')], [...(b[0].data as Float32Array)]);
  c.close();
  const idx = JSON.parse(fs.readFileSync(path.join(dir, 'model.safetensors.index.json'), 'utf8'));
  assert.equal(idx.metadata.total_size, 80);
  assert.throws(() => writeShardIndex(path.join(dir, 'x.json'), { p: '../x' }, 0), /plain file name/);
});
