// The engine validates a run config once, at its entry (quantizeRun's checkedConfig), for every
// client: before it touches the model, naming the field; the CLI shows that field as its flag and
// exits 2. `compare` is the config key alone: run/start computes the RTN/GPTQ comparison only when
// the config asks for it (it used to be forced on for the extension, so VS Code runs were slower).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DEFAULT_CONFIG, type QuantizeConfig } from '../../../src/protocol/config';
import type { EngineNotifications, EngineRequests } from '../../../src/protocol/messages';
import { Connection, ProtocolError, memoryTransportPair } from '../../../src/protocol/rpc';
import { quantizeRun } from '../../../src/engine/run/pipeline';
import { registerEngineHandlers, type EngineConnection } from '../../../src/engine/run/handlers';
import { runCli } from '../../../src/engine/cli';
import { makeBareCheckpoint } from '../../integration/helpers';

const tmp = (p: string) => mkdtempSync(join(tmpdir(), `lopro-entry-${p}-`));
const quiet = { onProgress: () => {}, onLayerDone: () => {}, log: () => {} };
const cfg = (o: Partial<QuantizeConfig> = {}): QuantizeConfig => ({ ...DEFAULT_CONFIG, layerOverrides: {}, ...o });

test('quantizeRun refuses a bad config before opening the model, naming the field', async () => {
  const missing = join(tmp('missing'), 'no-such-model.safetensors');
  const refused = async (config: object) => {
    try {
      await quantizeRun({ modelPath: missing, config: config as unknown as QuantizeConfig, runDir: tmp('out'), resume: false }, quiet);
    } catch (e) {
      assert.ok(e instanceof ProtocolError);
      return `${e.code} ${e.where}: ${e.message}`;
    }
    return 'accepted';
  };
  assert.equal(await refused(cfg({ threads: 300 })), 'E_BAD_CONFIG threads: threads must be an integer in [0, 256], got 300');
  assert.equal(await refused({ ...cfg(), backend: 'tpu' }), 'E_BAD_CONFIG backend: backend must be auto, cpu or gpu, got "tpu"');
  assert.equal(await refused({ ...cfg(), frobnicate: 1 }), 'E_BAD_CONFIG frobnicate: frobnicate: unknown setting');
  assert.equal(await refused(cfg({ bits: 5, rank: -2 })), 'E_BAD_CONFIG bits: bits must be 2, 3, 4 or 8, got 5; rank must be -1 or an integer ≥ 0, got -2');
  // A good config gets past the check: then the missing model is the error.
  assert.match(await refused(cfg()), /^E_IO .*no-such-model/);
});

/** runCli in this process, its stdout and stderr captured. */
async function cli(args: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '',
    err = '';
  const w = [process.stdout.write, process.stderr.write];
  process.stdout.write = ((s: string) => ((out += s), true)) as typeof process.stdout.write;
  process.stderr.write = ((s: string) => ((err += s), true)) as typeof process.stderr.write;
  try {
    const code = await runCli(args);
    return { code, out, err };
  } finally {
    [process.stdout.write, process.stderr.write] = w;
  }
}

test('lopro quantize: a config error exits 2 with one line naming the flag', async () => {
  const model = join(tmp('cli'), 'm.safetensors');
  makeBareCheckpoint(model);
  const line = async (...flags: string[]) => {
    const r = await cli(['quantize', model, '--out', tmp('cli-out'), ...flags]);
    assert.equal(r.code, 2, r.err);
    assert.equal(r.err.trim().split('\n').length, 1, r.err);
    return r.err.trim();
  };
  assert.equal(await line('--backend', 'tpu'), 'lopro: E_BAD_CONFIG: backend must be auto, cpu or gpu, got "tpu" [--backend] (hint: see `lopro quantize --help`)');
  assert.match(await line('--threads', '257'), /threads must be an integer in \[0, 256\], got 257 \[--threads\]/);
  assert.match(await line('--threads', 'many'), /--threads expects a number, got "many" \[--threads\]/);
  assert.match(await line('--compare=perhaps'), /--compare expects true or false, got "perhaps" \[--compare\]/);
  assert.match(await line('--override', '*.weight:bits=7'), /layerOverrides\["\*\.weight"\]\.bits must be 2, 3, 4 or 8, got 7 \[--override "\*\.weight:bits"\]/);
});

test('lopro quantize --help lists --backend, --compare and --threads with what they accept', async () => {
  const r = await cli(['quantize', '--help']);
  assert.equal(r.code, 0);
  assert.match(r.out, /--backend \[auto\] {2}auto\|cpu\|gpu\n {6}Where the quantization math runs/);
  assert.match(r.out, /--compare \[false\]\n {6}Also compute each layer's RTN and GPTQ proxy loss/);
  assert.match(r.out, /--threads \[0\] {2}an integer in \[0, 256\]\n {6}Worker threads of the CPU backend/);
});

test('run/start over the engine protocol computes the RTN/GPTQ comparison only when config.compare is set', async () => {
  const [a, b] = memoryTransportPair();
  type Served = { [K in keyof EngineRequests]: EngineRequests[K] };
  type Notes = { [K in keyof EngineNotifications]: EngineNotifications[K] };
  registerEngineHandlers(new Connection(a) as unknown as EngineConnection);
  const client = new Connection<Record<string, never>, Served, Notes>(b);
  const model = join(tmp('rpc'), 'm.safetensors');
  makeBareCheckpoint(model);
  const run = (compare: boolean) => client.sendRequest('run/start', { modelPath: model, config: cfg({ method: 'gptq', bits: 4, compare }), runDir: tmp('rpc-out'), resume: false });
  const off = await run(false);
  assert.equal(off.layers.length, 3);
  for (const l of off.layers) assert.equal(l.baselines, undefined, `${l.name} has baselines without compare`);
  const on = await run(true);
  for (const l of on.layers) assert.deepEqual(Object.keys(l.baselines ?? {}).sort(), ['gptq', 'rtn'], l.name);
});
