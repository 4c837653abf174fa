// Seeded generator of malformed and hostile safetensors inputs (issue 7.1, safetensors part).
// Every case is a small folder of files plus the path to open. Cases are built from one valid
// multi-dtype file (and one valid sharded folder) by a family of mutations; the generator does
// not decide the expected outcome — the test compares the reader with an independent reference.

import * as fs from 'node:fs';
import * as path from 'node:path';
import { rng, randomBytes, rawSafetensors, rawFile, type RawTensor } from './helpers';

export interface HostileCase {
  id: string;
  family: string;
  /** Files relative to the case folder. */
  files: Record<string, Uint8Array>;
  /** What to open, relative to the case folder ('.' = the folder itself). */
  open: string;
  /** Tensors the mutation touched, and their layout neighbours: an error naming a tensor must name one of these. */
  involved?: string[];
}

type Header = Record<string, unknown>;
type Entry = { dtype: unknown; shape: unknown; data_offsets: unknown; [k: string]: unknown };

const enc = (s: string) => new Uint8Array(Buffer.from(s, 'utf8'));

/** The valid base: one tensor per dtype (odd shapes), a scalar, an empty tensor, metadata. */
export function baseTensors(seed: number): RawTensor[] {
  const r = rng(seed);
  const spec: [string, string, number[], number][] = [
    ['embed.weight', 'F16', [6, 4], 2],
    ['layers.0.q_proj.weight', 'F32', [3, 5], 4],
    ['layers.0.k_proj.weight', 'BF16', [2, 6], 2],
    ['layers.0.norm', 'F64', [3], 8],
    ['codes', 'I32', [2, 3], 4],
    ['codes8', 'I8', [7], 1],
    ['packed', 'U8', [5], 1],
    ['fp8', 'F8_E4M3', [3, 3], 1],
    ['steps', 'I64', [2], 8],
    ['i16', 'I16', [3], 2],
    ['mask', 'BOOL', [3], 1],
    ['empty', 'F32', [0, 4], 4],
    ['scalar', 'F32', [], 4],
  ];
  return spec.map(([name, dtype, shape, size]) => {
    const n = shape.reduce((a, b) => a * b, 1);
    const bytes = randomBytes(r, n * size);
    if (dtype === 'BOOL') bytes.forEach((_, i) => (bytes[i] &= 1));
    return { name, dtype, shape, bytes };
  });
}

const META = { format: 'pt', source: 'hostile-corpus' };

function parts(file: Uint8Array): { header: Header; headerText: string; data: Uint8Array } {
  const n = Number(new DataView(file.buffer, file.byteOffset).getBigUint64(0, true));
  const headerText = Buffer.from(file.subarray(8, 8 + n)).toString('utf8');
  return { header: JSON.parse(headerText) as Header, headerText, data: file.subarray(8 + n) };
}

/** Serialise a (possibly broken) header object with the data, padding like a real writer. */
function rebuild(header: Header, data: Uint8Array, pad = true): Uint8Array {
  let text = JSON.stringify(header);
  if (pad) while (Buffer.byteLength(text) % 8) text += ' ';
  return rawFile(text, data);
}

const clone = <T>(x: T): T => JSON.parse(JSON.stringify(x)) as T;

export function generateCorpus(seed = 20260122): HostileCase[] {
  const r = rng(seed);
  const int = (lo: number, hi: number) => lo + Math.floor(r() * (hi - lo + 1));
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(r() * xs.length)];
  const tensors = baseTensors(seed);
  const base = rawSafetensors(tensors, META);
  const { header: baseHeader, data: baseData } = parts(base);
  const names = tensors.map((t) => t.name); // also the layout order
  const neighbours = (name: string) => {
    const i = names.indexOf(name);
    return names.slice(Math.max(0, i - 2), i + 3);
  };
  const cases: HostileCase[] = [];
  let n = 0;
  const add = (family: string, file: Uint8Array, involved?: string[]) => {
    cases.push({ id: `${String(n++).padStart(3, '0')}-${family}`, family, files: { 'model.safetensors': file }, open: 'model.safetensors', involved });
  };
  const mutateEntry = (family: string, count: number, f: (e: Entry, name: string, h: Header) => string[] | void) => {
    for (let i = 0; i < count; i++) {
      const h = clone(baseHeader);
      const name = pick(names);
      const also = f(h[name] as Entry, name, h) ?? [];
      add(family, rebuild(h, baseData), [...neighbours(name), ...also.flatMap(neighbours)]);
    }
  };

  // 0. controls: the base itself, and other valid re-encodings, must load correctly
  add('valid-base', base);
  add('valid-unpadded', rebuild(clone(baseHeader), baseData, false));
  add(
    'valid-no-metadata',
    (() => {
      const h = clone(baseHeader);
      delete h.__metadata__;
      return rebuild(h, baseData);
    })(),
  );
  add('valid-empty', rawFile('{}      ', new Uint8Array(0)));
  add(
    'valid-extra-field',
    (() => {
      const h = clone(baseHeader);
      (h[names[1]] as Entry).extra = [1, 2];
      return rebuild(h, baseData);
    })(),
  );

  // 1. tiny files
  add('empty-file', new Uint8Array(0));
  for (let len = 1; len <= 7; len++) add('tiny-file', base.subarray(0, len));
  add('only-prefix', base.subarray(0, 8));
  add('zero-prefix', new Uint8Array(8));

  // 2. fuzzed header length
  const trueLen = base.length - baseData.length - 8;
  const lens = [
    0,
    1,
    2,
    7,
    trueLen - 8,
    trueLen - 1,
    trueLen + 1,
    trueLen + 8,
    base.length - 8,
    base.length - 7,
    base.length,
    100_000_001,
    2 ** 32 + trueLen,
    2 ** 53,
    2 ** 63,
    2 ** 64 - 1,
  ];
  for (let i = 0; i < 8; i++) lens.push(int(0, base.length + 64));
  for (const len of lens) {
    const f = base.slice();
    new DataView(f.buffer).setBigUint64(0, BigInt(Math.min(len, 2 ** 64 - 1)) & 0xffffffffffffffffn, true);
    add('header-length', f);
  }

  // 3. random byte flips inside the header JSON (1–3 bytes; random bytes or single bits)
  for (let i = 0; i < 45; i++) {
    const f = base.slice();
    const flips = int(1, 3);
    for (let k = 0; k < flips; k++) {
      const at = 8 + int(0, trueLen - 1);
      f[at] = r() < 0.5 ? int(0, 255) : f[at] ^ (1 << int(0, 7));
    }
    add('json-byte-flip', f);
  }
  // random flips in the data section: still valid files, the bytes must come back as stored
  for (let i = 0; i < 5; i++) {
    const f = base.slice();
    f[8 + trueLen + int(0, baseData.length - 1)] ^= 0xff;
    add('data-byte-flip', f);
  }

  // 4. truncation at random points (prefix, header, data), and appended garbage
  for (let i = 0; i < 30; i++) add('truncated', base.subarray(0, int(0, base.length - 1)));
  for (let i = 0; i < 4; i++) {
    const f = new Uint8Array(base.length + int(1, 9));
    f.set(base);
    add('trailing-bytes', f);
  }

  // 5. offsets shifted, overlapping, out of range, ill-typed
  mutateEntry('offsets-shifted', 12, (e) => {
    const [b, x] = e.data_offsets as number[];
    const d = pick([-3, -1, 1, 2, 8]);
    e.data_offsets = pick([
      [b + d, x + d],
      [b + d, x],
      [b, x + d],
    ]);
  });
  mutateEntry('offsets-overlap', 8, (e, name, h) => {
    const otherName = pick(names.filter((x) => x !== name));
    const [ob] = (h[otherName] as Entry).data_offsets as number[];
    const [b, x] = e.data_offsets as number[];
    e.data_offsets = [ob, ob + (x - b)];
    return [otherName];
  });
  mutateEntry('offsets-out-of-range', 10, (e) => {
    const [b, x] = e.data_offsets as number[];
    e.data_offsets = pick([
      [b, x + 1_000_000],
      [b + 2 ** 40, x + 2 ** 40],
      [-4, x],
      [b, -1],
      [2 ** 53, 2 ** 53 + (x - b)],
      [b, 1e300],
    ]);
  });
  mutateEntry('offsets-ill-typed', 10, (e) => {
    const [b, x] = e.data_offsets as number[];
    e.data_offsets = pick([[b], [b, x, x], [String(b), x], [b + 0.5, x + 0.5], null, { begin: b, end: x }, [], [null, x], [true, x]]);
  });
  mutateEntry('offsets-missing', 3, (e) => {
    delete e.data_offsets;
  });

  // 6. dtype names mangled
  const dtypeSwaps: unknown[] = [
    'f16',
    'F61',
    'FP16',
    'float16',
    'F16 ',
    '',
    'U32',
    'U16',
    'U64',
    'F8_E5M2',
    'F4',
    'C64',
    'F8_E8M0',
    7,
    null,
    ['F16'],
    { F: 16 },
    'F32',
    'I32',
    'BF16',
    'U8',
    'I8',
  ];
  mutateEntry('dtype-mangled', 22, (e) => {
    e.dtype = pick(dtypeSwaps);
  });
  mutateEntry('dtype-missing', 3, (e) => {
    delete e.dtype;
  });

  // 7. shapes whose product is wrong, or ill-typed dims
  mutateEntry('shape-wrong', 18, (e) => {
    const s = e.shape as number[];
    e.shape = pick([
      s.map((d, i) => (i === 0 ? d + 1 : d)),
      [...s].reverse(),
      [...s, 1],
      [1, ...s],
      s.slice(1),
      [...s, 2],
      s.map(() => 0),
      s.map((d) => -d - 1),
      s.map((d) => d + 0.5),
      s.map(String),
      [null],
      5,
      null,
      'shape',
      [[2, 3]],
    ]);
  });
  mutateEntry('shape-missing', 3, (e) => {
    delete e.shape;
  });

  // 8. huge dims: products that overflow 32-bit, 53-bit and 64-bit arithmetic, some congruent to the true size
  mutateEntry('huge-dims', 14, (e) => {
    const [b, x] = e.data_offsets as number[];
    const bytes = x - b;
    e.dtype = 'U8';
    e.shape = pick([
      [2 ** 31, 2 ** 31, 4],
      [2 ** 32 + bytes],
      [2 ** 53],
      [2 ** 53 + 2],
      [1e308],
      [Number.MAX_SAFE_INTEGER, 3],
      [2 ** 32, 2 ** 32 + bytes / 2 ** 32],
      [65536, 65536, 65536, 65536],
      [2 ** 31 + 1, 2 ** 33],
      [bytes, 2 ** 64],
      [2 ** 52, 2 ** 12],
      [Infinity],
    ]);
    if (r() < 0.5) e.data_offsets = [b, b + int(0, 64)];
  });

  // 9. names: non-ASCII (valid), odd-but-valid, and invalid UTF-8 sequences in a name
  const weird = [
    '名前.weight',
    'ünïcødé',
    '🦙.layers.0',
    'rtl‮gnp.exe',
    'nul\u0000byte',
    'a'.repeat(5000),
    ' ',
    'x'.repeat(3) + '\n\t"q"',
    '__metadata',
    '__proto__',
    'constructor',
    'toString',
  ];
  for (const w of weird) {
    const h: Header = Object.create(null) as Header; // so "__proto__" becomes a key
    const victim = pick(names);
    for (const [k, v] of Object.entries(baseHeader)) h[k === victim ? w : k] = v;
    add('name-unicode', rebuild(h, baseData), [w, ...neighbours(victim)]);
  }
  for (const bad of [[0xc0, 0xaf], [0xed, 0xa0, 0x80], [0xf8, 0x88, 0x80, 0x80, 0x80], [0xff], [0xe2, 0x82], [0xef, 0xbb, 0xbf]]) {
    const text = Buffer.from(JSON.stringify(baseHeader).replace('"codes8"', '"cod@@8"'), 'utf8');
    const at = text.indexOf('@@');
    const header = new Uint8Array([...text.subarray(0, at), ...bad, ...text.subarray(at + 2)]);
    const padded = new Uint8Array(Math.ceil(header.length / 8) * 8).fill(0x20);
    padded.set(header);
    add('name-bad-utf8', rawFile(padded, baseData), ['codes8', ...neighbours('codes8')]);
  }

  // 10. header JSON of the wrong kind, BOM, nesting bombs, duplicate keys
  for (const t of ['[]', 'null', '42', '"str"', 'true', '{', '{"a":}', '{"a": {"dtype": "F32"', '\uFEFF{}', '{} {}', 'NaN', '{"a":1e999}'])
    add('header-not-object', rawFile(t.padEnd(8, ' '), new Uint8Array(0)));
  add('nesting-bomb', rawFile('['.repeat(200_000) + ']'.repeat(200_000), new Uint8Array(0)));
  add('nesting-bomb', rawFile('{"a":'.repeat(50_000) + '1' + '}'.repeat(50_000), new Uint8Array(0)));
  {
    // duplicate key: JSON.parse keeps the last; the dropped tensor's bytes then belong to nobody
    const text = JSON.stringify(baseHeader);
    const dupe = text.replace('"codes8":', '"codes":');
    add('duplicate-key', rawFile(dupe.padEnd(Math.ceil(dupe.length / 8) * 8, ' '), baseData), ['codes', 'codes8', ...neighbours('codes8'), ...neighbours('codes')]);
  }

  // 11. metadata mangled
  for (const m of [{ a: 1 }, { a: null }, { a: ['x'] }, { a: { b: 'c' } }, 'meta', ['a'], null, 5]) {
    const h = clone(baseHeader);
    h.__metadata__ = m;
    add('metadata-mangled', rebuild(h, baseData));
  }
  add(
    'metadata-valid-unicode',
    (() => {
      const h = clone(baseHeader);
      h.__metadata__ = { ключ: 'значение 🦙', '': '' };
      return rebuild(h, baseData);
    })(),
  );

  // 12. entries of the wrong kind, tensors removed (holes) or duplicated into extra names
  mutateEntry('entry-ill-typed', 6, (_e, name, h) => {
    h[name] = pick([null, 5, 'F16', [1, 2, 3], true, []]);
  });
  for (let i = 0; i < 6; i++) {
    const h = clone(baseHeader);
    const victim = pick(names.filter((x) => x !== 'empty'));
    delete h[victim];
    add('tensor-removed', rebuild(h, baseData), neighbours(victim));
  }
  for (let i = 0; i < 4; i++) {
    const h = clone(baseHeader);
    const victim = pick(names);
    h[`${victim}.copy`] = clone(h[victim]);
    add('tensor-aliased', rebuild(h, baseData), [`${victim}.copy`, ...neighbours(victim)]);
  }

  // 13. sharded checkpoints
  cases.push(...shardedCases(r, int, pick, tensors, () => n++));
  return cases;
}

function shardedCases(r: () => number, int: (lo: number, hi: number) => number, pick: <T>(xs: readonly T[]) => T, tensors: RawTensor[], nextId: () => number): HostileCase[] {
  const out: HostileCase[] = [];
  const groups = [tensors.slice(0, 5), tensors.slice(5, 9), tensors.slice(9)];
  const shardName = (i: number) => `model-${String(i + 1).padStart(5, '0')}-of-00003.safetensors`;
  const make = (
    family: string,
    edit: (wm: Record<string, unknown>, files: Record<string, Uint8Array>, index: Record<string, unknown>) => void,
    involved?: string[],
    open = '.',
  ) => {
    const files: Record<string, Uint8Array> = {};
    const wm: Record<string, unknown> = {};
    groups.forEach((g, i) => {
      files[shardName(i)] = rawSafetensors(g, META);
      for (const t of g) wm[t.name] = shardName(i);
    });
    const index: Record<string, unknown> = { metadata: { total_size: tensors.reduce((a, t) => a + t.bytes.length, 0) }, weight_map: wm };
    edit(wm, files, index);
    if (!('model.safetensors.index.json' in files)) files['model.safetensors.index.json'] = enc(JSON.stringify(index));
    out.push({ id: `${String(nextId()).padStart(3, '0')}-${family}`, family, files, open, involved });
  };
  const names = tensors.map((t) => t.name);
  make('sharded-valid', () => {});
  make('sharded-valid-via-index', () => {}, undefined, 'model.safetensors.index.json');
  make('sharded-valid-dot-slash', (wm) => {
    for (const k of Object.keys(wm)) wm[k] = `./${wm[k] as string}`;
  });
  for (let i = 0; i < 3; i++)
    make(
      'sharded-missing-file',
      (_wm, files) => {
        delete files[shardName(i)];
      },
      groups[i].map((t) => t.name),
    );
  for (let i = 0; i < 3; i++)
    make('sharded-missing-file', (wm) => {
      const t = pick(names);
      wm[t] = `model-0000${4 + i}-of-00003.safetensors`;
    });
  for (let i = 0; i < 3; i++)
    make(
      'sharded-ghost-tensor',
      (wm) => {
        wm[`ghost.${i}`] = shardName(i);
      },
      [`ghost.${i}`],
    );
  for (let i = 0; i < 3; i++) {
    const t = pick(names);
    make(
      'sharded-unlisted-tensor',
      (wm) => {
        delete wm[t];
      },
      [t],
    );
  }
  for (let i = 0; i < 3; i++) {
    const t = pick(names);
    make(
      'sharded-wrong-shard',
      (wm) => {
        const s = wm[t] as string;
        wm[t] = shardName(Number(s.slice(6, 11)) % 3);
      },
      [t],
    );
  }
  make(
    'sharded-duplicate',
    (_wm, files) => {
      files[shardName(1)] = rawSafetensors([...groups[1], groups[0][0]], META);
    },
    [groups[0][0].name],
  );
  make(
    'sharded-duplicate',
    (_wm, files) => {
      files[shardName(2)] = rawSafetensors([...groups[2], groups[1][1]], META);
    },
    [groups[1][1].name],
  );
  for (const bad of ['../model-00001-of-00003.safetensors', '/etc/passwd', 'sub/../../x.safetensors', '', 7, null, ['a'], 'nul\u0000.safetensors']) {
    make(
      'sharded-bad-shard-name',
      (wm) => {
        wm[names[2]] = bad;
      },
      [names[2]],
    );
  }
  for (const text of ['{', '[]', 'null', '{"weight_map": []}', '{"weight_map": {}}', '{"metadata": {}}', '\uFEFF{"weight_map": {"a": "b"}}', '{"weight_map": "x"}']) {
    make('sharded-bad-index', (_wm, files) => {
      files['model.safetensors.index.json'] = enc(text);
    });
  }
  make('sharded-index-bad-utf8', (_wm, files, index) => {
    const b = enc(JSON.stringify(index));
    b[5] = 0xff;
    files['model.safetensors.index.json'] = b;
  });
  for (let i = 0; i < 4; i++) {
    const s = int(0, 2);
    make(
      'sharded-corrupt-shard',
      (_wm, files) => {
        const f = files[shardName(s)];
        files[shardName(s)] = f.subarray(0, int(0, f.length - 1));
      },
      groups[s].map((t) => t.name),
    );
  }
  make('sharded-shard-is-folder', (_wm, files) => {
    delete files[shardName(1)];
    files[`${shardName(1)}/keep`] = new Uint8Array(0);
  });
  make('sharded-empty-folder', (_wm, files) => {
    for (const k of Object.keys(files)) delete files[k];
    files['README.md'] = enc('nothing here');
  });
  void r;
  return out;
}

/** Writes every case into `dir/<id>/` and returns the absolute path to open for each. */
export function writeCorpus(dir: string, cases: HostileCase[]): string[] {
  return cases.map((c) => {
    const caseDir = path.join(dir, c.id);
    fs.mkdirSync(caseDir, { recursive: true });
    for (const [rel, bytes] of Object.entries(c.files)) {
      const p = path.join(caseDir, rel);
      fs.mkdirSync(path.dirname(p), { recursive: true });
      fs.writeFileSync(p, bytes);
    }
    return path.join(caseDir, c.open);
  });
}
