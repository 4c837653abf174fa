// backend, compare and threads are config keys at the engine's entries: the CLI's help lists them,
// and run/start computes the RTN/GPTQ comparison only when the config asks for it (it used to be
// forced on for the extension, so a VS Code run was slower than the same run from the CLI).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DEFAULT_CONFIG, type QuantizeConfig } from '../../../src/protocol/config';
import type { EngineNotifications, EngineRequests } from '../../../src/protocol/messages';
import { Connection, memoryTransportPair } from '../../../src/protocol/rpc';
import { registerEngineHandlers, type EngineConnection } from '../../../src/engine/run/handlers';
import { runCli } from '../../../src/engine/cli';
import { makeBareCheckpoint } from '../../integration/helpers';

const tmp = (p: string) => mkdtempSync(join(tmpdir(), `lopro-entry-${p}-`));
const cfg = (o: Partial<QuantizeConfig> = {}): QuantizeConfig => ({ ...DEFAULT_CONFIG, layerOverrides: {}, ...o });

/** runCli in this process, its stdout and stderr captured. */
async function cli(args: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '', err = '';
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
