// The engine in worker mode over a real fork (IPC, serialization 'advanced'), spoken to with the
// protocol Connection as the extension host does: hello, inspect, run/start with progress and
// layer/done notifications, run/eval, run/export (native, f16, onnx; each verified by loading it
// back), layer/requantize + layer/apply, then a cancelled run that ends within 2 s and leaves no
// output.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { DEFAULT_CONFIG, type QuantizeConfig } from '../../src/protocol/config';
import type { LayerReport, ProgressValue } from '../../src/protocol/messages';
import { ProtocolError } from '../../src/protocol/rpc';
import { RunDir } from '../../src/engine/run/rundir';
import { SafetensorsFile } from '../../src/engine/io/safetensors';
import { forkEngine, tmp, PERSUASION, TINY, TRAIN } from './helpers';

const small = (over: Partial<QuantizeConfig>): QuantizeConfig => ({ ...DEFAULT_CONFIG, calibText: TRAIN, calibSamples: 4, ctx: 64, ep: 'cpu', layerOverrides: {}, ...over });

test('worker: hello, inspect, run/start with progress and layer/done, exports, requantize, cancel', async (t) => {
  const { child, conn } = forkEngine();
  try {
    const hello = await conn.sendRequest('engine/hello', { clientVersion: 'test' }, { timeoutMs: 30_000 });
    assert.equal(hello.pid, child.pid);
    assert.ok(hello.availableEps.includes('cpu'));

    const summary = await conn.sendRequest('model/inspect', { path: TINY });
    assert.equal(summary.kind, 'llama');
    assert.equal(summary.numBlocks, 4);
    assert.equal(summary.linears.length, 28);

    const progress: ProgressValue[] = [];
    const done: LayerReport[] = [];
    conn.onNotification('progress', (p) => progress.push(p.value));
    conn.onNotification('layer/done', (p) => done.push(p.report));
    const runDir = join(tmp('worker'), 'run');
    const r = await conn.sendRequest('run/start', { modelPath: TINY, config: small({ method: 'gptq', bits: 4 }), runDir, resume: false });
    assert.equal(r.layers.length, 28);
    assert.equal(done.length, 28);
    assert.deepEqual(
      done.map((l) => l.name),
      r.layers.map((l) => l.name),
    );
    assert.equal(progress[0].kind, 'begin');
    assert.ok(progress.some((p) => p.kind === 'end'));
    const reports = progress.filter((p) => p.kind === 'report');
    assert.ok(reports.some((p) => p.kind === 'report' && p.etaSeconds !== undefined && p.layer !== undefined && p.block !== undefined));
    assert.ok(existsSync(join(runDir, 'native', 'model.safetensors')));
    const loaded = await conn.sendRequest('run/load', { runDir });
    assert.equal(loaded.layers.length, 28);

    // Exports, each verified by loading it back: perplexity of the export vs the run's own output.
    const text = join(tmp('worker-text'), 'eval.txt');
    writeFileSync(text, readFileSync(PERSUASION, 'utf8').slice(0, 12_000)); // ≈ 45 windows of 64 tokens
    const runPpl = await conn.sendRequest('run/eval', { runDir, texts: [text] });
    assert.ok(runPpl.eval > 1 && Number.isFinite(runPpl.eval));
    for (const format of ['native', 'f16', 'onnx'] as const) {
      const outDir = join(tmp(`worker-export-${format}`), 'out');
      const ex = await conn.sendRequest('run/export', { runDir, format, outDir, verifyText: text });
      assert.ok(ex.files.includes('config.json') && ex.bytes > 0, `${format}: ${ex.files.join(',')}`);
      assert.equal(ex.runPerplexity, runPpl.eval);
      // Measured: native 0 (the same file), f16 9.3e-6 (every weight rounded to half precision),
      // onnx 3.3e-8 (same stored parts, other kernels). Issue 4.5's goal: within 0.1 %.
      const rel = Math.abs(ex.perplexity! / ex.runPerplexity! - 1);
      t.diagnostic(`${format} export: perplexity ${ex.perplexity} vs run ${ex.runPerplexity} (rel ${rel.toExponential(2)})`);
      assert.ok(rel < 1e-3, `${format}: ${ex.perplexity} vs ${ex.runPerplexity}`);
      if (format === 'f16') {
        const cfg = JSON.parse(readFileSync(join(outDir, 'config.json'), 'utf8'));
        assert.equal(cfg.quantization_config, undefined, 'a plain LlamaForCausalLM config');
        assert.ok(ex.files.includes('tokenizer.json'));
        // The original checkpoint's tensor names and shapes, all F16 (transformers loads it as a
        // plain LlamaForCausalLM: test/integration/hf_f16_check.py).
        const shapes = (f: string) => {
          const st = SafetensorsFile.open(f);
          try {
            return st.entries.map((e) => `${e.name}:${e.dtype === 'F16' ? 'F16' : e.dtype}:${e.shape.join('x')}`).sort();
          } finally {
            st.close();
          }
        };
        assert.deepEqual(shapes(join(outDir, 'model.safetensors')), shapes(join(TINY, 'model.safetensors')));
      }
    }

    // Re-quantize one layer from its cached Hessian, then apply it to the run.
    const layer = 'model.layers.1.mlp.down_proj';
    const rq = await conn.sendRequest('layer/requantize', { runDir, layer, overrides: { bits: 3 } });
    assert.equal(rq.before.config.bits, 4);
    assert.equal(rq.after.config.bits, 3);
    assert.ok(rq.after.proxyLoss > rq.before.proxyLoss, 'fewer bits, more loss');
    const applied = await conn.sendRequest('layer/apply', { runDir, layer, candidateId: rq.candidateId });
    assert.equal(applied.layers.find((l) => l.name === layer)!.config.bits, 3);
    assert.ok(applied.bpw < loaded.bpw);
    const det = await conn.sendRequest('layer/details', { runDir, layer, maxPoints: 64 });
    assert.equal(det.name, layer);

    // Cancel as soon as the first layer of a second run is done.
    const runDir2 = join(tmp('worker-cancel'), 'run');
    const ac = new AbortController();
    let abortedAt = 0;
    conn.onNotification('layer/done', () => {
      if (!ac.signal.aborted) {
        abortedAt = Date.now();
        ac.abort();
      }
    });
    await assert.rejects(
      conn.sendRequest('run/start', { modelPath: TINY, config: small({ method: 'lopro', bits: 2 }), runDir: runDir2, resume: false }, { signal: ac.signal }),
      (e: unknown) => e instanceof ProtocolError && e.code === 'E_CANCELLED',
    );
    const took = Date.now() - abortedAt;
    assert.ok(took < 2000, `cancel took ${took} ms`);
    assert.ok(!existsSync(join(runDir2, 'native')), 'no output after cancel');
    assert.deepEqual(new RunDir(runDir2).tempFiles(), []);
    const scratch = join(runDir2, 'scratch');
    assert.deepEqual(existsSync(scratch) ? readdirSync(scratch) : [], []);
  } finally {
    child.kill();
  }
});

test('worker: plan/measure keeps the measurement in the run folder, run/start there reuses it; a cancelled one leaves nothing', async () => {
  const { child, conn } = forkEngine();
  try {
    const logs: string[] = [];
    conn.onNotification('log', (p) => logs.push(p.message));
    const runDir = join(tmp('worker-measure'), 'run');
    const config = small({ targetBpw: 2.7 });
    const meas = await conn.sendRequest('plan/measure', { modelPath: TINY, config, runDir });
    assert.equal(meas.layers.length, 28);
    assert.ok(meas.layers.every((l) => l.candidates.length === 12 && l.gain > 0));
    assert.deepEqual(readdirSync(runDir).sort(), ['measurements.json']);
    assert.ok(
      logs.some((l) => /^measurement pass: 28 layers × 12 candidates/.test(l)),
      logs.join('\n'),
    );
    logs.length = 0;
    const r = await conn.sendRequest('run/start', { modelPath: TINY, config, runDir, resume: false });
    assert.ok(r.bpw <= 2.7);
    assert.ok(
      logs.some((l) => /reusing this folder's measurement/.test(l)),
      logs.join('\n'),
    );
    assert.ok(!logs.some((l) => /^measurement pass/.test(l)));
    // No target: refused by name. Cancelled: the folder it created is gone again.
    await assert.rejects(
      conn.sendRequest('plan/measure', { modelPath: TINY, config: small({}), runDir: join(tmp('worker-measure'), 'x') }),
      (e: unknown) => e instanceof ProtocolError && e.where === 'targetBpw',
    );
    const gone = join(tmp('worker-measure'), 'cancelled');
    const ac = new AbortController();
    const p = conn.sendRequest('plan/measure', { modelPath: TINY, config, runDir: gone }, { signal: ac.signal });
    setTimeout(() => ac.abort(), 1500);
    await assert.rejects(p, (e: unknown) => e instanceof ProtocolError && e.code === 'E_CANCELLED');
    assert.ok(!existsSync(gone), 'nothing left of a cancelled measurement');
  } finally {
    child.kill();
  }
});
