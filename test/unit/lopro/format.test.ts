import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { packRows, packRows_ref, unpackRows, wordsPerRow, wordsToBytes, bytesToWords } from '../../../src/engine/io/bitpack';
import { loproLayerTensors, readLoproLayer, loproQuantizationConfig, isLoproLayer, loproTensorName } from '../../../src/engine/io/lopro_format';
import { writeSafetensorsAtomic } from '../../../src/engine/io/safetensors_writer';
import { SafetensorsFile } from '../../../src/engine/io/safetensors';
import { cpuBackend, loproOn } from '../backend/backends';
import { dequantizeLoPRo, loproForward_ref } from '../../../src/engine/quant/lopro_dequant';
import { syntheticActivations, syntheticWeight } from '../../../src/engine/quant/lopro_synth';
import { SeededRng } from '../../../src/engine/quant/lopro_mat';
import { DEFAULT_LAYER_CONFIG, bitsPerWeight, type LayerConfig } from '../../../src/protocol/config';

test('bitpack: LSB-first rows of 32-bit words, equal to the bit-by-bit reference; unpack inverts (bits 1–8, 16; odd sizes)', () => {
  const rng = new SeededRng(1);
  for (const bits of [1, 2, 3, 4, 5, 6, 7, 8, 16])
    for (const [rows, cols] of [
      [1, 1],
      [3, 7],
      [5, 33],
      [2, 129],
    ]) {
      const codes = Uint16Array.from({ length: rows * cols }, () => rng.int(2 ** bits));
      const words = packRows(codes, rows, cols, bits);
      assert.equal(words.length, rows * wordsPerRow(cols, bits));
      assert.deepEqual(words, packRows_ref(codes, rows, cols, bits), `bits ${bits} ${rows}x${cols}`);
      assert.deepEqual(unpackRows(words, rows, cols, bits), codes);
      assert.deepEqual(bytesToWords(wordsToBytes(words)), words);
    }
  // Pinned example: 3-bit codes 1..11 of one row → word 0 holds codes 0..9 and the low 2 bits of code 10.
  const w = packRows([1, 2, 3, 4, 5, 6, 7, 0, 1, 2, 7], 1, 11, 3);
  assert.equal(w.length, 2);
  assert.equal(w[0] & 7, 1);
  assert.equal((w[0] >>> 3) & 7, 2);
  assert.equal(w[0] >>> 30, 3); // code 10 = 0b111: low two bits in word 0
  assert.equal(w[1], 1); // its high bit in word 1
  assert.throws(() => packRows([4], 1, 1, 2), /does not fit/);
  // Typed codes take the word-at-a-time path (b divides 32): same words, and an out-of-range code still named.
  const u8 = Uint8Array.from({ length: 3 * 37 }, () => rng.int(4));
  assert.deepEqual(packRows(u8, 3, 37, 2), packRows_ref(u8, 3, 37, 2));
  assert.throws(() => packRows(Uint8Array.of(0, 1, 3, 0, 4), 1, 5, 2), /code 4 at row 0, column 4 does not fit/);
});

const rows = 64,
  cols = 256;
const act = syntheticActivations(cols, 3, { tokens: 512 });
const W = syntheticWeight(rows, cols, 4);

/** The stored parts the product writes: the lopro() driver on the CPU backend (one thread). */
async function roundTrip(over: Partial<LayerConfig>) {
  const cfg = { ...DEFAULT_LAYER_CONFIG, ...over };
  const q = await loproOn(cpuBackend(1), W, rows, cols, act.H, act.meanAbs, cfg, 5);
  const layer = 'model.layers.0.self_attn.q_proj';
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lopro-fmt-'));
  const file = path.join(dir, 'model.safetensors');
  try {
    const tensors = loproLayerTensors(layer, q.stored);
    writeSafetensorsAtomic(file, tensors, { format: 'pt', quant_method: 'lopro' });
    const st = SafetensorsFile.open(file);
    try {
      assert.ok(isLoproLayer(st, layer));
      // Byte-exact: every tensor read back equals what was written.
      for (const t of tensors) {
        const a = st.readBytes(t.name),
          b = new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength);
        assert.deepEqual(a, b, t.name);
      }
      const back = readLoproLayer(st, layer);
      for (const k of ['perm', 'alphaBits', 'uCodes', 'vCodes', 'sigmaBits', 'codes', 'scaleBits', 'zeros', 'vqCodes', 'codebookBits', 'gIdx'] as const) {
        if (q.stored[k] === undefined) continue;
        assert.deepEqual(Array.from(back[k] as ArrayLike<number>), Array.from(q.stored[k] as ArrayLike<number>), k);
      }
      const deq = dequantizeLoPRo(back);
      let num = 0,
        den = 0;
      for (let i = 0; i < deq.length; i++) {
        num = Math.max(num, Math.abs(deq[i] - q.reconstructed[i]));
        den = Math.max(den, Math.abs(q.reconstructed[i]));
      }
      assert.ok(num <= 1e-6 * den, `${JSON.stringify(over)}: max |Δ| ${num}`); // measured 0 (same bits, same code)
      const x = Float64Array.from({ length: cols }, (_, j) => Math.cos(j));
      const y = loproForward_ref(x, back);
      for (let i = 0; i < rows; i++) {
        let ref = 0;
        for (let j = 0; j < cols; j++) ref += q.reconstructed[i * cols + j] * x[j];
        assert.ok(Math.abs(y[i] - ref) < 1e-5 * (1 + Math.abs(ref)));
      }
      return { tensors };
    } finally {
      st.close();
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

test('native format round trip: lopro 2/3/4-bit asym, sym, rank 0, act-order, lopro_v — byte-exact, dequantize equal', async () => {
  for (const over of [
    { bits: 2 },
    { bits: 3 },
    { bits: 4, sym: true },
    { bits: 3, rank: 0 },
    { bits: 2, actOrder: true },
    { bits: 2, method: 'lopro_v' as const },
    { bits: 3, method: 'lopro_v' as const, rank: 4 },
  ])
    await roundTrip(over);
});

test('tensor names, dtypes and shapes are the documented ones', async () => {
  const { tensors } = await roundTrip({ bits: 3 });
  const byName = Object.fromEntries(tensors.map((t) => [t.name.replace('model.layers.0.self_attn.q_proj.lopro.', ''), [t.dtype, t.shape]]));
  assert.deepEqual(byName, {
    params: ['I32', [8]],
    b_i: ['I32', [1]],
    b_h: ['I32', [1]],
    codes: ['I32', [rows, Math.ceil((cols * 3) / 32)]],
    scales: ['F16', [rows, 2]],
    zeros: ['I32', [rows, 1]],
    perm: ['I16', [cols]],
    alpha: ['F16', [cols]],
    u: ['F8_E4M3', [rows, 16]],
    v: ['F8_E4M3', [16, cols]],
    sigma: ['F16', [16]],
    uv_scale: ['F32', [2]],
  });
  assert.equal(loproTensorName('a.b', 'codes'), 'a.b.lopro.codes');
  // Payload bits ≈ spec §3 bpw: the difference is the 32-bit row padding of the packed zeros
  // (2 groups × 3 bits in one word per row) and the fixed params/b_i/b_h/uv_scale tensors.
  const bits = tensors.reduce((s, t) => s + t.data.byteLength * 8, 0);
  const fixed = (8 + 1 + 1 + 2) * 32,
    padding = rows * (32 - 2 * 3);
  const bpw = bitsPerWeight({ ...DEFAULT_LAYER_CONFIG, bits: 3 }, rows, cols);
  assert.ok(Math.abs((bits - fixed - padding) / (rows * cols) - bpw) < 1e-9, `${(bits - fixed - padding) / (rows * cols)} vs ${bpw}`);
});

test('quantization_config for config.json, and a damaged layer is refused with a named tensor', async () => {
  const qc = loproQuantizationConfig({ ...DEFAULT_LAYER_CONFIG, bits: 3, rank: 32 });
  assert.equal(qc.quant_method, 'lopro');
  assert.equal(qc.bits, 3);
  assert.equal(qc.group_size, 128);
  assert.equal(qc.rank, 32);
  assert.equal(qc.hadamard_block, 128);
  assert.equal(qc.desc_act, false);
  const q = await loproOn(cpuBackend(1), W, rows, cols, act.H, act.meanAbs, { ...DEFAULT_LAYER_CONFIG, rank: 2 }, 0);
  const tensors = loproLayerTensors('L', q.stored);
  const src = (edit: (name: string, b: Uint8Array) => Uint8Array) => ({
    has: (n: string) => tensors.some((t) => t.name === n),
    entry: (n: string) => tensors.find((t) => t.name === n)!,
    readBytes: (n: string) => {
      const t = tensors.find((x) => x.name === n)!;
      return edit(n, new Uint8Array(t.data.buffer.slice(t.data.byteOffset, t.data.byteOffset + t.data.byteLength)));
    },
  });
  assert.throws(
    () =>
      readLoproLayer(
        src((n, b) => (n === 'L.lopro.params' ? ((b[0] = 9), b) : b)),
        'L',
      ),
    /format version 9/,
  );
  assert.throws(
    () =>
      readLoproLayer(
        src((n, b) => (n === 'L.lopro.perm' ? ((b[1] = 0x7f), b) : b)),
        'L',
      ),
    /out of range/,
  );
  assert.deepEqual(
    dequantizeLoPRo(
      readLoproLayer(
        src((_, b) => b),
        'L',
      ),
    ),
    q.reconstructed,
  );
});
