// Issue 7.5: host and webview accept only validated messages. Seeded junk — random JSON-ish
// values, near-misses of every real message (one field dropped, retyped, added, made huge or
// non-finite), prototype tricks, cycles — goes to parseFromWebview, parseToWebview, parseEnvelope
// and a live Connection. Nothing may throw; every junk message must be rejected (undefined, or
// the Connection's onInvalid), and no handler may see it.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DEFAULT_CONFIG } from '../../../src/protocol/config';
import { parseFromWebview, parseToWebview } from '../../../src/protocol/webview';
import { Connection, memoryTransportPair, parseEnvelope, type Transport } from '../../../src/protocol/rpc';
import { rng } from './synth_llama';

type R = () => number;
const pick = <T>(r: R, xs: readonly T[]): T => xs[Math.floor(r() * xs.length)];

const ATOMS: readonly unknown[] = [
  undefined,
  null,
  true,
  false,
  0,
  -1,
  1.5,
  NaN,
  Infinity,
  -Infinity,
  2 ** 53,
  -0,
  '',
  'x',
  'ready',
  'request',
  '__proto__',
  'constructor',
  '\u0000',
  '\ud800',
  'x'.repeat(10_000),
  [],
  {},
  [null],
  10n,
  Symbol('s'),
  () => 1,
  new Date(0),
  new Uint8Array(3),
  new Map(),
];

/** A random value of bounded depth: atoms, arrays, plain objects with junk or real-looking keys. */
function junk(r: R, depth = 0): unknown {
  const k = r();
  if (depth > 3 || k < 0.45) return pick(r, ATOMS);
  if (k < 0.6) return Array.from({ length: Math.floor(r() * 4) }, () => junk(r, depth + 1));
  const o: Record<string, unknown> = {};
  const keys = [
    'type',
    'kind',
    'id',
    'method',
    'params',
    'result',
    'error',
    'config',
    'layer',
    'format',
    'field',
    'overrides',
    'candidateId',
    'outputFolder',
    'code',
    'message',
    'zz',
  ];
  for (let i = Math.floor(r() * 5); i > 0; i--) o[pick(r, keys)] = junk(r, depth + 1);
  return o;
}

const config = { ...DEFAULT_CONFIG, layerOverrides: {} };
/** Well-formed messages of both parsers; the fuzzer damages copies of them. */
const GOOD_FROM_WEBVIEW: Record<string, unknown>[] = [
  { type: 'ready' },
  { type: 'cancel' },
  { type: 'evaluate' },
  { type: 'pick', field: 'calibText' },
  { type: 'start', config, outputFolder: '/r' },
  { type: 'openLayer', layer: 'model.layers.0.mlp.up_proj' },
  { type: 'requantize', layer: 'x', overrides: { bits: 3 } },
  { type: 'apply', layer: 'x', candidateId: 'c1' },
  { type: 'export', format: 'onnx' },
  { type: 'tryIt' },
  { type: 'generate', prompt: 'The city council', maxTokens: 48, temperature: 0, topP: 1 },
];
const GOOD_ENVELOPES: Record<string, unknown>[] = [
  { kind: 'request', id: 1, method: 'model/inspect', params: {} },
  { kind: 'response', id: 1, result: null },
  { kind: 'error', id: 2, error: { code: 'E_IO', message: 'x' } },
  { kind: 'notification', method: 'progress', params: {} },
];

/** A copy of `m` broken in one way that every validator must catch. */
function damage(r: R, m: Record<string, unknown>, validKeys: (m: Record<string, unknown>) => string[]): unknown {
  const c: Record<string, unknown> = structuredClone(m);
  const keys = Object.keys(c);
  switch (Math.floor(r() * 6)) {
    case 0: // an unknown extra field
      c[`x${Math.floor(r() * 1000)}`] = junk(r);
      return c;
    case 1: {
      // a required field dropped
      const req = validKeys(c);
      if (!req.length) return { ...c, type: `${String(c.type)}!` };
      delete c[pick(r, req)];
      return c;
    }
    case 2: {
      // a required field retyped (always to a different type)
      const req = validKeys(c);
      const key = req.length ? pick(r, req) : pick(r, keys);
      const was = typeof c[key];
      c[key] = pick(
        r,
        ATOMS.filter((a) => typeof a !== was && !(was === 'object' && typeof a === 'object')),
      );
      return c;
    }
    case 3: // the discriminant misspelt
      if ('type' in c) c.type = String(c.type).toUpperCase() + '_';
      else c.kind = `${String(c.kind)}s`;
      return c;
    case 4: // the whole message wrapped
      return pick(r, [[c], { message: c }, JSON.stringify(c), null]);
    default: // a non-finite or absurd number where a config number goes
      if (c.config) return { ...c, config: { ...(c.config as object), [pick(r, ['bits', 'rank', 'groupSize', 'seed'])]: pick(r, [NaN, Infinity, '4', null, [4]]) } };
      if ('id' in c) return { ...c, id: pick(r, [-1, 1.5, NaN, '1', null, 2 ** 64]) };
      return { ...c, [pick(r, ['__proto__', 'constructor'])]: { polluted: true } };
  }
}

/** Fields whose absence or retyping must invalidate each message (per parser). */
const webviewRequired = (m: Record<string, unknown>) => Object.keys(m).filter((k) => k !== 'type' && !(m.type === 'requantize' && k === 'overrides' && false));
const envelopeRequired = (m: Record<string, unknown>) =>
  m.kind === 'notification' ? ['method'] : m.kind === 'request' ? ['id', 'method'] : m.kind === 'response' ? ['id', 'result'] : ['id', 'error'];

function fuzzCases(seed: number, n: number): { fromWebview: unknown[]; envelopes: unknown[]; raw: unknown[] } {
  const r = rng(seed);
  const raw = Array.from({ length: n }, () => junk(r));
  const fromWebview = Array.from({ length: n }, () => damage(r, pick(r, GOOD_FROM_WEBVIEW), webviewRequired));
  const envelopes = Array.from({ length: n }, () => damage(r, pick(r, GOOD_ENVELOPES), envelopeRequired));
  return { fromWebview, envelopes, raw };
}

const describe = (x: unknown) => {
  try {
    return JSON.stringify(x, (_, v) => (typeof v === 'bigint' ? `${v}n` : v))?.slice(0, 200);
  } catch {
    return String(x);
  }
};

test('controls: the good messages pass both validators', () => {
  for (const g of GOOD_FROM_WEBVIEW) assert.deepEqual(parseFromWebview(structuredClone(g)), g);
  for (const g of GOOD_ENVELOPES) assert.ok(parseEnvelope(structuredClone(g)), describe(g));
});

test('webview parsers: ≥ 200 random and near-miss messages rejected, nothing throws', () => {
  const { fromWebview, raw } = fuzzCases(7501, 300);
  let rejected = 0;
  for (const m of [...fromWebview, ...raw]) {
    let got: unknown;
    assert.doesNotThrow(() => (got = parseFromWebview(m)), describe(m));
    // Junk can by chance be a valid message (e.g. {type:'ready'} built from random keys): then it
    // must round-trip as exactly that; anything else must be undefined.
    if (got !== undefined)
      assert.ok(
        GOOD_FROM_WEBVIEW.some((g) => g.type === (got as { type: string }).type),
        `accepted ${describe(m)}`,
      );
    else rejected++;
    assert.doesNotThrow(() => parseToWebview(m), describe(m));
  }
  // Every near miss of a real message is rejected: none may slip through.
  for (const m of fromWebview) assert.equal(parseFromWebview(m), undefined, `near miss accepted: ${describe(m)}`);
  // Host → webview: random junk never validates as a host message of a known type with its fields.
  for (const m of raw) {
    const got = parseToWebview(m) as { type?: unknown } | undefined;
    if (got) assert.equal(typeof got.type, 'string', describe(m));
  }
  console.log(`webview fuzz: ${fromWebview.length + raw.length} messages, ${rejected} rejected by parseFromWebview`);
  assert.ok(rejected >= 200);
  assert.equal(({} as Record<string, unknown>).polluted, undefined, 'no prototype pollution');
});

test('parseToWebview rejects types named like Object.prototype members', () => {
  // Found by this fuzzer: `x.type in TO_WEBVIEW_FIELDS` was true for inherited names and
  // parseToWebview then threw (fixed in e835b58 with an own-property check).
  for (const type of ['__proto__', 'constructor', 'toString', 'hasOwnProperty', 'valueOf']) {
    assert.equal(parseToWebview({ type }), undefined, type);
    assert.equal(parseFromWebview({ type }), undefined, type);
  }
});

test('parseEnvelope and a live Connection: junk goes to onInvalid, handlers never see it, nothing throws', async () => {
  const { envelopes, raw } = fuzzCases(7502, 300);
  const junkMsgs = [...envelopes, ...raw].filter((m) => {
    let e: unknown;
    assert.doesNotThrow(() => (e = parseEnvelope(m)), describe(m));
    return e === undefined;
  });
  // Near misses of envelopes whose damage left them valid (e.g. an extra field on a response) are
  // tolerated by design (forward compatibility); everything else must be rejected.
  assert.ok(junkMsgs.length >= 300, `only ${junkMsgs.length} rejected`);

  const [a, b] = memoryTransportPair();
  // A transport we can inject raw (unvalidated) messages into, as a real IPC channel would.
  const inject: ((m: unknown) => void)[] = [];
  const spy: Transport = { send: (m) => a.send(m), onMessage: (l) => void (inject.push(l), a.onMessage(l)), onClose: (l) => a.onClose(l) };
  const host = new Connection<{ ping: { params: { n: number }; result: number } }, Record<string, never>, { note: unknown }>(spy);
  const peer = new Connection<Record<string, never>, { ping: { params: { n: number }; result: number } }, { note: unknown }>(b);
  const invalid: unknown[] = [];
  let handled = 0;
  host.onInvalid = (m) => invalid.push(m);
  host.onRequest('ping', async (p) => (handled++, p.n + 1));
  host.onNotification('note', () => handled++);
  for (const m of junkMsgs) assert.doesNotThrow(() => inject.forEach((l) => l(m)), describe(m));
  await new Promise((res) => setImmediate(res));
  assert.equal(invalid.length, junkMsgs.length, 'every junk message reached onInvalid');
  assert.equal(handled, 0, 'no handler saw junk');
  // The near misses that do parse (extra fields, odd params) go through too: the connection answers
  // unknown methods with E_METHOD_NOT_FOUND, drops answers to requests it never sent, never throws.
  const parsed = [...envelopes, ...raw].filter((m) => parseEnvelope(m) !== undefined);
  for (const m of parsed) assert.doesNotThrow(() => inject.forEach((l) => l(m)), describe(m));
  await new Promise((res) => setImmediate(res));
  assert.equal(invalid.length, junkMsgs.length, 'valid envelopes are not reported as invalid');
  // The connection still works afterwards.
  assert.equal(await peer.sendRequest('ping', { n: 41 }, { timeoutMs: 5000 }), 42);
  console.log(`envelope fuzz: ${envelopes.length + raw.length} messages, ${junkMsgs.length} rejected, all reported to onInvalid`);
});
