// "Try it" through the worker protocol, as the extension host drives it: `generate` on the float model and
// on a finished run at once, each streaming `generate/text` notifications (routed by request id) whose
// concatenation is the result's text; a second prompt reuses the open model; a cancel mid-way ends with
// E_CANCELLED within the host's 2 s deadline; bad parameters are refused by name.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { DEFAULT_CONFIG } from '../../src/protocol/config';
import { ErrorCode, type GenerateParams } from '../../src/protocol/messages';
import { ProtocolError } from '../../src/protocol/rpc';
import { forkEngine, tmp, TINY, TRAIN, type HostConnection } from './helpers';

const PROMPT = 'The city council';
const params = (over: Partial<GenerateParams>): GenerateParams => ({ path: TINY, prompt: PROMPT, maxTokens: 24, temperature: 0, topP: 1, seed: 0, ep: 'cpu', ...over });

/** Sends `generate` and collects the text notifications of this request only (by its id). */
function generateStreaming(conn: HostConnection, p: GenerateParams, signal?: AbortSignal, onDelta?: (delta: string) => void) {
  const deltas: string[] = [];
  const counts: number[] = [];
  let id = -1;
  conn.onNotification('generate/text', (n) => {
    if (n.requestId !== id) return;
    deltas.push(n.delta);
    counts.push(n.tokens);
    onDelta?.(n.delta);
  });
  const result = conn.sendRequest('generate', p, { signal, onId: (i) => void (id = i) });
  return { deltas, counts, result };
}

test('worker: generate streams the float and the quantized model side by side, reuses open models, cancels, refuses bad params', async (t) => {
  const { child, conn } = forkEngine();
  const logs: string[] = [];
  conn.onNotification('log', (n) => logs.push(n.message));
  try {
    const runDir = join(tmp('generate'), 'run');
    const config = { ...DEFAULT_CONFIG, method: 'rtn' as const, bits: 4, calibText: TRAIN, calibSamples: 4, ctx: 64, ep: 'cpu' as const, layerOverrides: {} };
    await conn.sendRequest('run/start', { modelPath: TINY, config, runDir, resume: false });

    // Both at once, as the Try it panel starts them: each stream belongs to its own request.
    const float = generateStreaming(conn, params({}));
    const quant = generateStreaming(conn, params({ path: runDir }));
    const [f, q] = await Promise.all([float.result, quant.result]);
    t.diagnostic(
      `float: ${JSON.stringify(f.text)} (${f.decodeTokensPerSecond.toFixed(0)} tok/s); quantized: ${JSON.stringify(q.text)} (${q.decodeTokensPerSecond.toFixed(0)} tok/s)`,
    );
    assert.equal(f.source, 'float');
    assert.equal(q.source, 'native (quantized)');
    for (const [r, s] of [
      [f, float],
      [q, quant],
    ] as const) {
      assert.ok(s.deltas.length > 1, `${r.source}: ${s.deltas.length} text notifications`);
      assert.equal(s.deltas.join(''), r.text, `${r.source}: the streamed text is the result's`);
      // Each piece says how many tokens are generated so far: rising, at most the result's count.
      assert.ok(
        s.counts.every((c, i) => c >= 1 && (i === 0 || c > s.counts[i - 1])),
        `${r.source}: token counts ${s.counts.join(',')}`,
      );
      assert.ok(s.counts[s.counts.length - 1] <= r.tokens.length && s.counts[s.counts.length - 1] >= r.tokens.length - 2);
      assert.ok(r.text.length > 0);
      assert.ok(r.promptTokens > 0 && r.tokens.length >= 1 && r.tokens.length <= 24);
      assert.equal(r.stop === 'max_tokens', r.tokens.length === 24);
      assert.ok(r.prefillTokensPerSecond > 0 && r.prefillSeconds > 0);
      assert.ok(r.tokens.length < 2 || r.decodeTokensPerSecond > 0);
      assert.equal(r.ep, 'cpu');
    }
    // 4-bit RTN moves the logits: the two models are really two (same prompt, greedy, other tokens).
    assert.notDeepEqual(q.tokens, f.tokens, 'the quantized run answered exactly as the float model');

    // A second prompt opens nothing: the models stay open in the engine (one "opened" line each).
    const again = generateStreaming(conn, params({ path: runDir }));
    assert.deepEqual((await again.result).tokens, q.tokens, 'greedy is deterministic');
    const opened = logs.filter((l) => /^generate: opened /.test(l));
    assert.equal(opened.length, 2, opened.join('\n'));

    // Stop mid-way: a generation of 1500 tokens cancelled after its first piece of text.
    const ac = new AbortController();
    let abortedAt = 0;
    const long = generateStreaming(conn, params({ maxTokens: 1500 }), ac.signal, () => {
      if (ac.signal.aborted) return;
      abortedAt = Date.now();
      ac.abort();
    });
    await assert.rejects(long.result, (e: unknown) => e instanceof ProtocolError && e.code === ErrorCode.Cancelled);
    const took = Date.now() - abortedAt;
    t.diagnostic(`cancel settled ${took} ms after the abort, ${long.deltas.length} pieces of text streamed`);
    assert.ok(took < 2000, `cancel took ${took} ms`);
    assert.ok(long.deltas.length < 1500);

    // Bad parameters are refused by name; a model folder that is not there by its path.
    for (const [over, where] of [
      [{ maxTokens: 0 }, 'maxTokens'],
      [{ temperature: -1 }, 'temperature'],
      [{ topP: 0 }, 'topP'],
      [{ seed: 0.5 }, 'seed'],
    ] as const)
      await assert.rejects(conn.sendRequest('generate', params(over)), (e: unknown) => e instanceof ProtocolError && e.code === ErrorCode.InvalidParams && e.where === where);
    await assert.rejects(
      conn.sendRequest('generate', params({ path: join(runDir, 'nope') })),
      (e: unknown) => e instanceof ProtocolError && /nope/.test(`${e.message} ${e.where}`),
    );

    // The engine still answers after all that; release forgets both models of the run and the float folder.
    const { released } = await conn.sendRequest('generate/release', { paths: [runDir, TINY] });
    assert.equal(released, 2);
  } finally {
    child.kill();
  }
});
